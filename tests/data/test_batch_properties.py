"""Property-based tests of the batch contract: any batch is valid or rejected by name."""

import dataclasses

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from stsun_lightning.batch import Batch, BatchValidationError, collate_batches
from stsun_lightning.data.examples import example_batch

TENSOR_FIELDS = [
    "image", "wavelength_nm", "bandwidth_nm", "modality", "band_mask", "gsd_m", "dates",
    "time_mask", "valid_mask", "task", "outputs", "categories", "category_mask", "target",
]  # fmt: skip
DTYPES = [
    torch.float16,
    torch.float32,
    torch.float64,
    torch.int32,
    torch.int64,
    torch.bool,
    torch.uint8,
]

sizes = st.fixed_dictionaries(
    {
        "b": st.integers(1, 3),
        "t": st.integers(1, 4),
        "c": st.integers(1, 16),
        "h": st.integers(1, 24),
        "w": st.integers(1, 24),
        "k": st.integers(1, 5),
    }
)


def build(s: dict) -> Batch:
    return example_batch(
        s["b"], s["t"], s["c"], s["h"], s["w"], categories=list(range(s["k"])), source="p"
    )


def outcome(batch: Batch) -> str | None:
    """None when valid; else the message, which must be a BatchValidationError's."""
    try:
        batch.validate()
    except BatchValidationError as error:
        return str(error)
    return None


@settings(max_examples=60, deadline=None)
@given(sizes)
def test_batches_of_any_size_are_valid(s):
    assert outcome(build(s)) is None


@settings(max_examples=150, deadline=None)
@given(sizes, st.sampled_from(TENSOR_FIELDS), st.data())
def test_a_field_of_another_shape_or_dtype_is_rejected_by_name(s, name, data):
    batch = build(s)
    value = getattr(batch, name)
    change = data.draw(st.sampled_from(["grow", "drop_dim", "add_dim", "dtype"]))
    if change == "grow":
        axis = data.draw(st.integers(0, value.dim() - 1))
        shape = list(value.shape)
        shape[axis] += data.draw(st.integers(1, 3))
        new = torch.zeros(shape, dtype=value.dtype)
    elif change == "drop_dim":
        new = value[0]  # one dimension fewer (0-d for a 1-d field)
    elif change == "add_dim":
        new = value[None]
    else:
        new = value.to(data.draw(st.sampled_from(DTYPES)))
    message = outcome(dataclasses.replace(batch, **{name: new}))
    if message is not None:
        # The message names a field: this one, or one whose size this one fixes.
        assert "Batch" in message and "'" in message, message
        if name != "image":
            assert any(f"'{f}'" in message for f in [*TENSOR_FIELDS, "source"]), message


@settings(max_examples=60, deadline=None)
@given(sizes, st.data())
def test_random_masks_give_a_valid_batch_or_name_the_empty_mask(s, data):
    batch = build(s)
    band_mask = torch.tensor(
        data.draw(
            st.lists(
                st.booleans(),
                min_size=s["b"] * s["t"] * s["c"],
                max_size=s["b"] * s["t"] * s["c"],
            )
        )
    )
    time_mask = torch.tensor(
        data.draw(st.lists(st.booleans(), min_size=s["b"] * s["t"], max_size=s["b"] * s["t"]))
    )
    valid = torch.rand(s["b"], s["h"], s["w"]) < data.draw(st.floats(0, 1))
    mutated = dataclasses.replace(
        batch,
        band_mask=band_mask.reshape(s["b"], s["t"], s["c"]),
        time_mask=time_mask.reshape(s["b"], s["t"]),
        valid_mask=valid,
    )
    message = outcome(mutated)
    if not mutated.time_mask.any(1).all():
        assert message is not None and "'time_mask'" in message
    elif not (mutated.time_mask & mutated.band_mask.any(-1)).any(1).all():
        # A real frame without a real band counts as not real: some frame must have both.
        assert message is not None and "'band_mask'" in message
    else:
        assert message is None  # any valid-pixel mask, even all False, is a valid batch


@settings(max_examples=60, deadline=None)
@given(st.lists(sizes, min_size=1, max_size=4))
def test_collation_concatenates_equal_shapes_or_names_the_differing_field(all_sizes):
    items = [build(s) for s in all_sizes]
    keys = {tuple(s[k] for k in "tchwk") for s in all_sizes}
    try:
        merged = collate_batches(items)
    except BatchValidationError as error:
        assert len(keys) > 1 and "Cannot collate: field" in str(error)
        return
    assert len(keys) == 1
    assert merged.batch_size == sum(s["b"] for s in all_sizes)
    assert outcome(merged) is None
