"""Fine-tuning from a checkpoint: merged vocabularies, initial rows, freezing, LoRA, errors."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from conftest import make_batch
from stsun_lightning.errors import ConfigError, UnknownNameError
from stsun_lightning.models import create_model
from stsun_lightning.tasks.imprint import PixelFeatureMeans, imprint_rows
from stsun_lightning.tasks.lora import LoraOptions, add_lora, lora_state_to_plain, merge_lora
from stsun_lightning.tasks.module import StsunTask
from stsun_lightning.tasks.parts import PARTS, part_of
from tasks.example_data import ExampleDataModule, example_batches, quiet_trainer

BASE = {
    "landcover": {
        "task": "semantic_segmentation",
        "categories": ["water", "tree_cover", "cropland"],
    },
    "height": {"task": "regression", "variables": ["canopy_height"]},
}
FINE = {"landcover": {"task": "semantic_segmentation", "categories": ["water", "glacier", "snow"]}}


def fine_batches(count: int) -> list:
    """Land-cover batches whose categories follow FINE's rows (water 0, glacier 1, snow 2)."""
    return [
        make_batch(task=0, categories=[0, 1, 2], seed=10 + i, source="landcover")
        for i in range(count)
    ]


@pytest.fixture(scope="module")
def base_checkpoint(tmp_path_factory):
    """A StsunTask checkpoint trained two steps on BASE, with a data record."""
    torch.manual_seed(0)
    task = StsunTask("stsun_tiny", sources=BASE)
    trainer = quiet_trainer(max_steps=2)
    trainer.fit(task, ExampleDataModule(example_batches(4), record={"statistics": "base"}))
    path = tmp_path_factory.mktemp("base") / "base.ckpt"
    trainer.save_checkpoint(path)
    return path


def network_state(path) -> dict[str, torch.Tensor]:
    state = torch.load(path, weights_only=True)["state_dict"]
    return {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}


def test_a_merge_keeps_every_known_row_and_weight_and_appends_new_rows():
    torch.manual_seed(0)
    trained = create_model("stsun_tiny", categories=["water", "tree_cover", "cropland"])
    fresh = create_model("stsun_tiny", categories=["water", "glacier"])
    glacier = fresh.category_embedding.weight[1].detach().clone()
    fresh.load_state_dict(trained.state_dict())
    assert fresh.categories == ["water", "tree_cover", "cropland", "glacier"]
    merge = fresh.category_embedding.last_merge
    assert merge is not None and merge.new == ("glacier",)
    assert merge.kept == ("water", "tree_cover", "cropland")
    table = fresh.category_embedding.weight.detach()
    assert torch.equal(table[:3], trained.category_embedding.weight.detach())
    assert torch.equal(table[3], glacier)  # the new row is this module's own
    theirs = trained.state_dict()
    for name, value in fresh.state_dict().items():
        if name != "category_embedding.weight" and isinstance(value, torch.Tensor):
            assert torch.equal(value, theirs[name]), name
    batch = make_batch(task=0, categories=[3, 0], seed=1)  # glacier and water
    with torch.no_grad():
        logits = fresh.eval()(batch).logits
    assert logits is not None and logits.shape[2] == 2 and bool(torch.isfinite(logits).all())


def test_every_parameter_belongs_to_one_part():
    network = create_model("stsun_tiny", categories=["water"], variables=["ndvi"])
    parts = {part_of(name) for name, _ in network.named_parameters()}
    assert parts == set(PARTS)


def test_init_from_keeps_the_checkpoint_weights_and_imprints_new_rows(base_checkpoint):
    task = StsunTask("stsun_tiny", sources=FINE, init_from=str(base_checkpoint))
    trainer = quiet_trainer(max_steps=0)
    # One batch: every new category has more labelled pixels than imprinting needs.
    datamodule = ExampleDataModule(fine_batches(1), record={"statistics": "fine"})
    trainer.fit(task, datamodule)
    network = task.model
    saved = network_state(base_checkpoint)
    assert network.categories == ["water", "tree_cover", "cropland", "glacier", "snow"]
    assert task.new_categories == ["glacier", "snow"]
    table = network.category_embedding.weight.detach()
    assert torch.equal(table[:3], saved["category_embedding.weight"])
    for name, value in network.state_dict().items():
        if isinstance(value, torch.Tensor) and name != "category_embedding.weight":
            assert torch.equal(value, saved[name]), name
    # Imprinted: the projection of each new row points along the mean feature of its pixels.
    means = PixelFeatureMeans(network.eval(), ["glacier", "snow"])
    means.add(task.to_model_rows(fine_batches(1)[0]))
    proj = network.category_head.proj
    for name, mean in means.means().items():
        direction = proj(table[network.category_embedding.vocabulary.index(name), :-1])
        cosine = torch.nn.functional.cosine_similarity(direction, mean, dim=0)
        assert float(cosine) > 0.999, name
    assert network.category_embedding.unlearnt == []
    # The new datamodule's record is what a checkpoint of this run keeps.
    checkpoint = {"state_dict": task.state_dict()}
    task.on_save_checkpoint(checkpoint)
    assert checkpoint["stsun_data"] == {"statistics": "fine"}


def test_new_rows_from_named_categories_are_their_mean(base_checkpoint):
    task = StsunTask(
        "stsun_tiny",
        sources=FINE,
        init_from=str(base_checkpoint),
        init_categories={"glacier": ["water", "cropland"], "snow": ["tree_cover"]},
    )
    quiet_trainer(max_steps=0).fit(task, ExampleDataModule(fine_batches(2)))
    table = task.model.category_embedding.weight.detach()
    saved = network_state(base_checkpoint)["category_embedding.weight"]
    torch.testing.assert_close(table[3], (saved[0] + saved[2]) / 2, rtol=0, atol=1e-7)
    assert torch.equal(table[4], saved[1])


def test_init_categories_must_name_new_and_known_categories(base_checkpoint):
    task = StsunTask(
        "stsun_tiny",
        sources=FINE,
        init_from=str(base_checkpoint),
        init_categories={"glacier": ["ice"]},
    )
    with pytest.raises(
        UnknownNameError, match=r"category 'ice' \(in model.init_categories.glacier\)"
    ):
        quiet_trainer(max_steps=0).fit(task, ExampleDataModule(fine_batches(1)))


def test_frozen_parts_do_not_move_and_stay_in_eval_mode(base_checkpoint):
    task = StsunTask(
        "stsun_tiny",
        sources=FINE,
        init_from=str(base_checkpoint),
        freeze=["backbone", "heads", "tasks", "variables"],
        known_categories_lr=0.0,
        learning_rate=1e-2,
        warmup_steps=1,
    )
    trainer = quiet_trainer(max_steps=4)
    trainer.fit(task, ExampleDataModule(fine_batches(4)))
    saved = network_state(base_checkpoint)
    network = task.model
    for name, value in network.state_dict().items():
        if isinstance(value, torch.Tensor) and part_of(name) != "categories":
            assert torch.equal(value, saved[name]), name
    table = network.category_embedding.weight.detach()
    assert torch.equal(table[:3], saved["category_embedding.weight"])  # known rows at rate 0
    assert torch.equal(network.category_head.log_scale.detach(), saved["category_head.log_scale"])
    optimised = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    assert optimised == {id(network.category_embedding.weight), id(network.category_head.log_scale)}
    task.train()
    assert not network.tokenizer.training and not network.date_trunk.training
    assert network.category_embedding.training


def test_known_rows_move_by_the_ratio_of_a_full_step(base_checkpoint):
    def step_of(ratio: float) -> torch.Tensor:
        torch.manual_seed(0)
        task = StsunTask(
            "stsun_tiny",
            sources=FINE,
            init_from=str(base_checkpoint),
            freeze=["backbone", "heads"],
            known_categories_lr=ratio,
            init_categories={"glacier": ["water"], "snow": ["cropland"]},
            warmup_steps=1,
        )
        quiet_trainer(max_steps=1).fit(task, ExampleDataModule(fine_batches(1)))
        return task.model.category_embedding.weight.detach()

    full, slow = step_of(1.0), step_of(0.25)
    saved = network_state(base_checkpoint)["category_embedding.weight"]
    torch.testing.assert_close(slow[:3] - saved, 0.25 * (full[:3] - saved), rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(slow[3:], full[3:])  # new rows: the full step either way


def test_lora_merged_predicts_as_unmerged_and_loads_without_peft(tmp_path):
    torch.manual_seed(0)
    network = create_model("stsun_tiny", categories=["water", "tree_cover"]).eval()
    add_lora(network, LoraOptions(rank=4, alpha=8))
    trainable = {n for n, p in network.named_parameters() if p.requires_grad}
    assert not any(".base_layer." in n for n in trainable)  # the wrapped layers are frozen
    assert sum(".lora_" in n for n in trainable) == 2 * 12  # A and B of 12 trunk layers
    assert any(n.startswith("tokenizer.") for n in trainable)  # other parts keep training
    with torch.no_grad():
        for name, parameter in network.named_parameters():
            if ".lora_B." in name:
                parameter.normal_(0, 0.05)
    batch = make_batch(task=0, categories=[0, 1], seed=3)
    with torch.no_grad():
        unmerged = network(batch).logits
        state = network.state_dict()
        lora_state_to_plain(state, network, "")
        merge_lora(network)
        merged = network(batch).logits
    torch.testing.assert_close(merged, unmerged, rtol=0, atol=1e-5)
    assert not any("lora" in k or "base_layer" in k for k in state)
    torch.save(state, tmp_path / "plain.pt")
    torch.save(batch.image, tmp_path / "image.pt")
    torch.save(merged, tmp_path / "expected.pt")
    script = textwrap.dedent(
        f"""
        import sys, torch
        sys.modules["peft"] = None  # importing peft now fails, as if not installed
        sys.path.insert(0, {str(__import__("pathlib").Path(__file__).parent)!r})
        from conftest import make_batch
        from stsun_lightning.models import create_model
        network = create_model("stsun_tiny", categories=["water", "tree_cover"]).eval()
        network.load_state_dict(torch.load({str(tmp_path / "plain.pt")!r}, weights_only=True))
        batch = make_batch(task=0, categories=[0, 1], seed=3)
        assert torch.equal(batch.image, torch.load({str(tmp_path / "image.pt")!r}))
        with torch.no_grad():
            got = network(batch).logits
        expected = torch.load({str(tmp_path / "expected.pt")!r})
        assert (got - expected).abs().max() < 1e-5, (got - expected).abs().max()
        print("ok")
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr[-2000:]


class StopAfter(Callback):
    """Ends fit after ``steps`` optimiser steps (an interrupted run, same schedule)."""

    def __init__(self, steps: int) -> None:
        self.steps = steps

    def on_train_batch_end(self, trainer, *_args) -> None:
        if trainer.global_step >= self.steps:
            trainer.should_stop = True


def test_a_lora_run_checkpoints_plain_weights_and_resumes_its_adapters(base_checkpoint, tmp_path):
    def run(folder, stop=None, ckpt_path=None) -> StsunTask:
        torch.manual_seed(0)  # the adapters' A starts at random
        task = StsunTask(
            "stsun_tiny",
            sources=FINE,
            init_from=str(base_checkpoint),
            freeze=["backbone"],
            lora={"rank": 2, "alpha": 4},
            warmup_steps=1,
        )
        callbacks = [ModelCheckpoint(dirpath=folder, save_last=True, every_n_train_steps=1)]
        callbacks += [StopAfter(stop)] if stop else []
        trainer = quiet_trainer(max_steps=4, enable_checkpointing=True, callbacks=callbacks)
        # One batch repeated: a plain loader restarts its epoch on resuming.
        trainer.fit(task, ExampleDataModule(fine_batches(1) * 4), ckpt_path=ckpt_path)
        return task

    straight = run(tmp_path / "straight")
    run(tmp_path / "interrupted", stop=2)
    last = tmp_path / "interrupted" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    assert checkpoint["global_step"] == 2
    assert not any("lora" in k or "base_layer" in k for k in checkpoint["state_dict"])
    assert any(".lora_A." in k for k in checkpoint["stsun_lora"])
    resumed = run(tmp_path / "resumed", ckpt_path=str(last))
    expected = {k: v for k, v in straight.state_dict().items() if isinstance(v, torch.Tensor)}
    got = resumed.state_dict()
    for name, value in expected.items():
        torch.testing.assert_close(got[name], value, rtol=0, atol=1e-6, msg=name)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"model_overrides": {"dim": 96}},
            r"base\.ckpt \(preset 'stsun_tiny', overrides None\).*\(7, 64\) in the checkpoint, \(7, 96\) here",
        ),
        ({"model_overrides": {"tokenizer": "attention"}}, r"base\.ckpt.*other parts than this one"),
    ],
)
def test_another_network_is_named_with_the_checkpoint(base_checkpoint, change, message):
    task = StsunTask("stsun_tiny", sources=FINE, init_from=str(base_checkpoint), **change)
    with pytest.raises(ConfigError, match=message):
        task.setup("fit")


def test_a_checkpoint_of_another_format_is_named(base_checkpoint, tmp_path):
    checkpoint = torch.load(base_checkpoint, weights_only=True)
    checkpoint["stsun_checkpoint_format"] = 99
    path = tmp_path / "future.ckpt"
    torch.save(checkpoint, path)
    task = StsunTask("stsun_tiny", sources=FINE, init_from=str(path))
    with pytest.raises(
        ConfigError, match=r"Cannot load the checkpoint .*future\.ckpt: it has format 99"
    ):
        task.setup("fit")
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match=r"junk\.ckpt"):
        StsunTask("stsun_tiny", sources=FINE, init_from=str(tmp_path / "junk.ckpt")).setup("fit")


def test_outside_fit_a_name_the_checkpoint_never_learnt_is_refused(base_checkpoint):
    task = StsunTask("stsun_tiny", sources=FINE)
    with pytest.raises(UnknownNameError, match=r"category 'glacier'.*never learnt it"):
        quiet_trainer().validate(
            task, ExampleDataModule(fine_batches(1)), ckpt_path=base_checkpoint
        )


def test_resuming_a_fine_tune_run_keeps_its_weights(base_checkpoint, tmp_path):
    """--ckpt_path wins over init_from: the resumed rows are not imprinted again."""
    task = StsunTask("stsun_tiny", sources=FINE, init_from=str(base_checkpoint))
    checkpoints = ModelCheckpoint(dirpath=tmp_path, save_last=True, every_n_train_steps=1)
    trainer = quiet_trainer(max_steps=2, enable_checkpointing=True, callbacks=[checkpoints])
    trainer.fit(task, ExampleDataModule(fine_batches(2)))
    saved = network_state(tmp_path / "last.ckpt")
    resumed = StsunTask("stsun_tiny", sources=FINE, init_from=str(base_checkpoint))
    quiet_trainer(max_steps=2).fit(
        resumed, ExampleDataModule(fine_batches(2)), ckpt_path=str(tmp_path / "last.ckpt")
    )
    for name, value in resumed.model.state_dict().items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, saved[name]), name


def test_imprint_rows_points_each_projection_along_its_mean():
    torch.manual_seed(0)
    network = create_model("stsun_tiny", categories=["water", "glacier"])
    mean = torch.randn(network.category_head.proj.out_features)
    imprint_rows(network, {"glacier": mean}, ["water"])
    row = network.category_embedding.weight.detach()[1]
    direction = network.category_head.proj(row[:-1])
    assert float(torch.nn.functional.cosine_similarity(direction, mean, dim=0)) > 0.9999
    assert float(row[-1]) == float(network.category_embedding.weight.detach()[0, -1])


@pytest.mark.slow
def test_stsun_fit_fine_tunes_from_a_checkpoint_through_the_cli(tmp_path):
    from stsun_lightning.cli import build_cli
    from stsun_lightning.data.datamodules.world import SpectralWorldDataModule

    root = tmp_path / "world"
    SpectralWorldDataModule(root=str(root), scene_size=64, scenes_per_source=2)
    data = [
        "--data=stsun_lightning.data.datamodules.world.SpectralWorldDataModule",
        f"--data.root={root}",
        "--data.scene_size=64",
        "--data.scenes_per_source=2",
        "--data.patch_size=32",
        "--data.batch_size=2",
        "--data.train_batches_per_epoch=3",
        "--data.samples_per_scene=4",
    ]
    trainer = ["--trainer.accelerator=cpu", "--trainer.enable_progress_bar=false"]
    trainer += ["--trainer.max_epochs=1", "--trainer.limit_val_batches=1"]
    base = build_cli(
        ["fit", *data, "--data.source_names=[s1s2_landcover]", *trainer,
         f"--trainer.default_root_dir={tmp_path / 'base'}"]
    )  # fmt: skip
    checkpoint = tmp_path / "base.ckpt"
    base.trainer.save_checkpoint(checkpoint)
    tuned = build_cli(
        ["fit", "--config=configs/finetune.yaml", *data, "--data.source_names=[aerial_landcover]",
         *trainer, f"--trainer.default_root_dir={tmp_path / 'tuned'}",
         f"--model.init_from={checkpoint}", "--data.num_workers=0"]
    )  # fmt: skip
    network = tuned.model.model
    assert tuned.trainer.state.finished
    assert {"building", "road"} <= set(tuned.model.new_categories)
    assert set(network.categories) >= set(base.model.model.categories)
    assert not any("lora" in name for name, _ in network.named_parameters())  # merged
    saved = torch.load(next((tmp_path / "tuned").rglob("last.ckpt")), weights_only=True)
    assert "isprs_rgbir" in str(saved["stsun_data"]) and "sentinel2" not in str(saved["stsun_data"])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"freeze": ["trunks"]},
            r"network part 'trunks' \(in model.freeze\)\. Did you mean 'trunk'",
        ),
        ({"lora": {"rank": 0}}, r"model.lora.rank must be an integer >= 1, got 0"),
        ({"lora": {"r": 8}}, r"model.lora has unknown keys \['r'\]"),
        ({"known_categories_lr": 2.0}, r"model.known_categories_lr must be in \[0, 1\], got 2.0"),
    ],
)
def test_bad_fine_tuning_options_are_named(options, message):
    with pytest.raises(ConfigError, match=message):
        StsunTask("stsun_tiny", sources=FINE, **options).setup("fit")
