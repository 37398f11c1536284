import dataclasses
import itertools

import pytest
import torch

from conftest import CATEGORIES, VARIABLES, make_batch
from stsun_lightning.batch import Batch, OutputKind
from stsun_lightning.models import create_model
from stsun_lightning.models.heads import MASKED_LOGIT

ATOL = 1e-4


def _model(**overrides):
    torch.manual_seed(0)
    return create_model(
        "stsun_tiny", categories=CATEGORIES, variables=VARIABLES, **overrides
    ).eval()


@pytest.mark.parametrize(
    ("c", "t", "hw"),
    list(itertools.product([1, 2, 4, 13, 242], [1, 3, 12], [(32, 32), (50, 70), (256, 256)])),
)
def test_any_band_count_date_count_and_size_runs_forward_and_backward(c, t, hw):
    model = _model()
    model.train()
    h, w = hw
    # Every other case asks for a label grid of another size than the input.
    label = (h, w) if (c + t) % 2 else (h // 2 + 3, w // 2 + 1)
    batch = make_batch(
        b=1, t=t, c=c, h=h, w=w, label_size=label, outputs=[(OutputKind.STATE, t - 1, t - 1)]
    )
    out = model(batch)
    assert out.logits.shape == (1, 1, 3, *label)
    assert out.values is None
    out.logits.float().square().mean().backward()
    assert torch.isfinite(model.tokenizer.kernel.weight.grad).all()
    assert model.decoder.unpatch.weight.grad.abs().sum() > 0


def test_value_outputs_have_the_requested_variables_and_bands():
    model = _model()
    out = model(make_batch(t=2, c=13, categories=None, variables=[1, 0], label_size=(16, 16)))
    assert out.values.shape == (2, 1, 2, 16, 16) and out.logits is None
    out = model(make_batch(t=2, c=13, categories=None, target_bands=5))
    assert out.values.shape == (2, 1, 5, 32, 32)


@pytest.mark.parametrize(
    "options",
    [
        {"tokenizer": "hypernetwork"},
        {"tokenizer": "attention"},
        {"conv_stem": 8},
        {"basis_kernels": True},
        {"balanced_band_init": True},
    ],
)
def test_permuting_bands_with_their_metadata_leaves_outputs_unchanged(options):
    model = _model(**options)
    with torch.no_grad():  # these start at zero: give them weights, so the test sees them
        if model.conv_stem is not None:
            torch.nn.init.normal_(model.conv_stem.to_tokens.weight, std=0.3)
        if model.basis_kernels:
            torch.nn.init.normal_(model.tokenizer.basis_kernel.weight, std=0.1)
            torch.nn.init.normal_(model.decoder.basis_mix.weight, std=0.3)
    batch = make_batch(t=2, c=13, h=40, w=48, outputs=[(0, 0, 0), (1, 0, 1)])
    perm = torch.randperm(13, generator=torch.Generator().manual_seed(3))
    permuted = dataclasses.replace(
        batch,
        image=batch.image[:, :, perm],
        wavelength_nm=batch.wavelength_nm[:, perm],
        bandwidth_nm=batch.bandwidth_nm[:, perm],
        modality=batch.modality[:, perm],
    )
    with torch.no_grad():
        ref, got = model(batch).logits, model(permuted).logits
    torch.testing.assert_close(got, ref, atol=ATOL, rtol=0)
    # And the metadata matters: permuting the pixels alone changes the output.
    shuffled = dataclasses.replace(batch, image=batch.image[:, :, perm])
    with torch.no_grad():
        assert (model(shuffled).logits - ref).abs().max() > 1e-3


@pytest.mark.parametrize("tokenizer", ["hypernetwork", "attention"])
def test_a_masked_band_changes_nothing(tokenizer):
    model = _model(tokenizer=tokenizer)
    batch = make_batch(t=2, c=4, h=32, w=40)
    garbage = torch.full_like(batch.image[:, :, :1], float("nan"))
    padded = dataclasses.replace(
        batch,
        image=torch.cat([batch.image[:, :, :2], garbage, batch.image[:, :, 2:]], 2),
        wavelength_nm=torch.cat(
            [batch.wavelength_nm[:, :2], torch.full((2, 1), 1234.0), batch.wavelength_nm[:, 2:]], 1
        ),
        bandwidth_nm=torch.cat(
            [batch.bandwidth_nm[:, :2], torch.full((2, 1), 5.0), batch.bandwidth_nm[:, 2:]], 1
        ),
        modality=torch.cat(
            [batch.modality[:, :2], torch.zeros(2, 1, dtype=torch.long), batch.modality[:, 2:]], 1
        ),
        band_mask=torch.cat(
            [
                batch.band_mask[..., :2],
                torch.zeros(2, 2, 1, dtype=torch.bool),
                batch.band_mask[..., 2:],
            ],
            -1,
        ),
    ).validate()
    with torch.no_grad():
        torch.testing.assert_close(model(padded).logits, model(batch).logits, atol=ATOL, rtol=0)


def _with_masked_frame(batch: Batch, position: int) -> Batch:
    garbage = torch.randn_like(batch.image[:, :1]) * 100
    outputs = batch.outputs.clone()
    refs = outputs[..., 1:]
    used = outputs[..., :1] != OutputKind.AGGREGATE
    outputs[..., 1:] = torch.where(used & (refs >= position), refs + 1, refs)
    return dataclasses.replace(
        batch,
        image=torch.cat([batch.image[:, :position], garbage, batch.image[:, position:]], 1),
        band_mask=torch.cat(
            [batch.band_mask[:, :position], batch.band_mask[:, :1], batch.band_mask[:, position:]],
            1,
        ),
        dates=torch.cat(
            [batch.dates[:, :position], torch.full((2, 1), 25000.0), batch.dates[:, position:]], 1
        ),
        time_mask=torch.cat(
            [
                batch.time_mask[:, :position],
                torch.zeros(2, 1, dtype=torch.bool),
                batch.time_mask[:, position:],
            ],
            1,
        ),
        outputs=outputs,
    ).validate()


@pytest.mark.parametrize("t", [1, 3])
@pytest.mark.parametrize("position", [0, 1])
def test_a_masked_date_changes_nothing(t, position):
    model = _model()
    slots = [
        (OutputKind.STATE, t - 1, t - 1),
        (OutputKind.CHANGE, 0, t - 1),
        (OutputKind.AGGREGATE, -1, -1),
    ]
    batch = make_batch(t=t, c=4, h=32, w=32, outputs=slots)
    with torch.no_grad():
        ref = model(batch).logits
        got = model(_with_masked_frame(batch, position)).logits
    torch.testing.assert_close(got, ref, atol=ATOL, rtol=0)


@pytest.mark.parametrize("window", [8, 2])  # one window, and many windows with shifts
def test_padded_pixels_change_nothing_on_real_pixels(window):
    model = _model(window=window)
    batch = make_batch(t=2, c=4, h=50, w=70, outputs=[(0, 1, 1), (1, 0, 1)])
    big_h, big_w = 77, 93
    image = torch.full((2, 2, 4, big_h, big_w), float("nan"))
    image[..., :50, :70] = batch.image
    valid = torch.zeros(2, big_h, big_w, dtype=torch.bool)
    valid[:, :50, :70] = True
    padded = dataclasses.replace(batch, image=image, valid_mask=valid, target=None).validate()
    with torch.no_grad():
        ref = model(batch).logits
        got = model(padded).logits
    assert got.shape[-2:] == (big_h, big_w)
    torch.testing.assert_close(got[..., :50, :70], ref, atol=ATOL, rtol=0)
    assert torch.isfinite(got).all()


def test_invalid_pixels_inside_the_image_are_ignored():
    model = _model()
    batch = make_batch(t=1, c=4, h=32, w=32)
    valid = torch.ones(2, 32, 32, dtype=torch.bool)
    valid[:, 8:16, 8:16] = False
    a = dataclasses.replace(batch, valid_mask=valid)
    image = batch.image.clone()
    image[..., 8:16, 8:16] = float("nan")
    b = dataclasses.replace(batch, valid_mask=valid, image=image)
    with torch.no_grad():
        torch.testing.assert_close(model(b).logits, model(a).logits, atol=ATOL, rtol=0)
        assert torch.isfinite(model(b).logits).all()


def test_a_category_logit_does_not_depend_on_the_other_requested_categories():
    model = _model()
    full = make_batch(t=1, c=4, categories=[0, 1, 2, 3, 4])
    subset = dataclasses.replace(
        full,
        categories=torch.tensor([[3, 0]] * 2),
        category_mask=torch.ones(2, 2, dtype=torch.bool),
    )
    with torch.no_grad():
        ref, got = model(full).logits, model(subset).logits
    assert got.shape[2] == 2
    torch.testing.assert_close(got[:, :, 0], ref[:, :, 3], atol=1e-5, rtol=0)
    torch.testing.assert_close(got[:, :, 1], ref[:, :, 0], atol=1e-5, rtol=0)


def test_unrequested_rows_never_win():
    model = _model()
    batch = make_batch(t=1, c=4, categories=[0, 1, 2, 3])
    batch.category_mask[:, 1:3] = False
    with torch.no_grad():
        logits = model(batch).logits
    assert (logits[:, :, 1:3] == MASKED_LOGIT).all()
    assert set(logits.argmax(2).unique().tolist()) <= {0, 3}


def test_per_slot_category_masks_restrict_each_slot():
    model = _model()
    batch = make_batch(t=2, c=4, categories=[0, 1, 7, 8], outputs=[(0, 0, 0), (0, 1, 1), (1, 0, 1)])
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1]], dtype=torch.bool)
    batch = dataclasses.replace(
        batch, category_mask=mask.expand(2, -1, -1).clone(), target=None
    ).validate()
    with torch.no_grad():
        pred = model(batch).logits.argmax(2)
    assert set(pred[:, :2].unique().tolist()) <= {0, 1}
    assert set(pred[:, 2].unique().tolist()) <= {2, 3}


@pytest.mark.parametrize("tokenizer", ["hypernetwork", "attention"])
@pytest.mark.parametrize("request_kind", ["categories", "variables", "bands"])
def test_every_parameter_on_the_path_of_a_task_gets_a_gradient(tokenizer, request_kind):
    model = _model(tokenizer=tokenizer).train()
    kwargs = {
        "categories": dict(categories=list(range(len(CATEGORIES)))),
        "variables": dict(categories=None, variables=[0, 1]),
        "bands": dict(categories=None, target_bands=3),
    }[request_kind]
    batch = make_batch(t=3, c=5, outputs=[(0, 0, 0), (1, 0, 2), (2, -1, -1)], **kwargs)
    batch.dates[:, 1] = float("nan")  # an unknown date: its learned vector is on the path
    out = model(batch)
    (out.logits if out.logits is not None else out.values).square().mean().backward()
    off_path = {
        "categories": ("value_head.", "variable_embedding."),
        "variables": ("category_head.", "category_embedding."),
        "bands": ("category_head.", "category_embedding.", "variable_embedding."),
    }[request_kind]
    missing = [
        name
        for name, p in model.named_parameters()
        if not name.startswith(off_path) and (p.grad is None or p.grad.abs().sum() == 0)
    ]
    assert missing == []


def test_a_batch_mixing_tasks_equals_its_items_run_alone():
    model = _model()
    batch = make_batch(b=2, t=2, c=4)
    batch.task[1] = 3
    with torch.no_grad():
        together = model(batch).logits
        for i in range(2):
            alone = dataclasses.replace(
                batch, **{k: v[i : i + 1] for k, v in batch.tensors().items()}, source=["test"]
            )
            torch.testing.assert_close(model(alone).logits, together[i : i + 1], atol=ATOL, rtol=0)
