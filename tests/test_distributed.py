"""Scale-out: DDP over real processes, SLURM ranks, bf16, and resuming after a SIGKILL.

The multi-process tests run ``python -m stsun_lightning.cli`` in subprocesses (two DDP
ranks over gloo on the CPU, one thread each) and read what
:class:`recording.BatchRecorder` wrote per rank.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from recording import fingerprints
from stsun_lightning.batch import collate_batches
from stsun_lightning.cli import build_cli
from stsun_lightning.data.datamodules.world import SpectralWorldDataModule
from stsun_lightning.data.samplers.epochs import EpochConcatDataset
from stsun_lightning.data.samplers.sources import ResumableDataLoader, SourceBatchSampler

TESTS = Path(__file__).parent
SOURCES = ("s2_clouds", "canopy_height")  # a class task and a value task: different heads
DATA = {
    "scene_size": 64,
    "scenes_per_source": 2,
    "patch_size": 32,
    "batch_size": 2,
    "train_batches_per_epoch": 8,
    "samples_per_scene": 16,
}


@pytest.fixture(scope="module")
def world_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    SpectralWorldDataModule(root=str(root), source_names=list(SOURCES), **DATA)  # generate once
    return root


def _datamodule(root: Path) -> SpectralWorldDataModule:
    datamodule = SpectralWorldDataModule(root=str(root), source_names=list(SOURCES), **DATA)
    datamodule.setup("fit")
    return datamodule


def _data_args(root: Path) -> list[str]:
    return [
        "--data=stsun_lightning.data.datamodules.world.SpectralWorldDataModule",
        f"--data.root={root}",
        f"--data.source_names=[{','.join(SOURCES)}]",
        *(f"--data.{k}={v}" for k, v in DATA.items()),
    ]


def _stsun(subcommand: str, root: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "stsun_lightning.cli",
        subcommand,
        "--seed_everything=0",
        *_data_args(root),
        "--model.warmup_steps=4",
        "--trainer.accelerator=cpu",
        f"--trainer.default_root_dir={out}",
        "--trainer.enable_progress_bar=false",
        "--trainer.logger=false",
        *extra,
    ]


def _run(argv: list[str], timeout: float, **extra_env: str) -> subprocess.CompletedProcess:
    """Run ``stsun`` with this folder importable, one thread per process, no SLURM around."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "PMI_"))}
    for name in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH")]))
    env.update(OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE", **extra_env)
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)


def _check(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stderr[-4000:]


def _records(folder: Path, rank: int, stage: str) -> list[dict]:
    lines = (folder / f"batches_rank{rank}.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["stage"] == stage]


def _metrics(folder: Path, rank: int) -> dict:
    return json.loads((folder / f"metrics_rank{rank}.json").read_text())


def _recorder(folder: Path) -> list[str]:
    return ["--trainer.callbacks+=recording.BatchRecorder", f"--trainer.callbacks.folder={folder}"]


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("strategy", ["ddp", "ddp_find_unused_parameters_true"])
def test_ddp_ranks_see_disjoint_halves_and_log_the_single_process_metrics(
    world_root, tmp_path, strategy
):
    # Plain "ddp" trains through the task's zero term over every parameter (a class and
    # a value source leave different heads unused); the other finds them itself.
    out = tmp_path / "ddp"
    _check(
        _run(
            _stsun(
                "fit",
                world_root,
                out,
                f"--trainer.strategy={strategy}",
                "--trainer.devices=2",
                "--trainer.max_epochs=1",
                *_recorder(out / "seen"),
            ),
            timeout=240,
        )
    )

    datamodule = _datamodule(world_root)
    train = EpochConcatDataset(datamodule.datasets("train"))
    whole = datamodule.train_dataloader().batch_sampler  # the datamodule's own settings
    assert isinstance(whole, SourceBatchSampler) and whole.world_size == 1

    settings = {
        "sizes": whole.sizes,
        "batch_size": whole.batch_size,
        "num_batches": whole.num_batches,
        "temperature": whole.temperature,
        "seed": whole.seed,
    }
    shares = [list(SourceBatchSampler(**settings, rank=r, world_size=2)) for r in (0, 1)]
    # Each rank trained on exactly its share of the epoch, in order...
    for rank, batches in enumerate(shares):
        expected = [fingerprints(collate_batches([train[i] for i in b])) for b in batches]
        assert [r["items"] for r in _records(out / "seen", rank, "train")] == expected
    # ...the shares are disjoint halves that together make the single-process epoch.
    assert len(shares[0]) == len(shares[1]) == len(list(whole)) // 2
    assert not {tuple(b) for b in shares[0]} & {tuple(b) for b in shares[1]}
    assert sorted(shares[0] + shares[1]) == sorted(list(whole))

    # Validation: every item once, split between the ranks.
    val = {
        item
        for dataset in datamodule.datasets("val")
        for i in range(len(dataset))
        for item in fingerprints(collate_batches([dataset[i]]))
    }
    seen = [{i for r in _records(out / "seen", k, "val") for i in r["items"]} for k in (0, 1)]
    assert seen[0] and seen[1] and not seen[0] & seen[1]
    assert seen[0] | seen[1] == val

    # The metrics both ranks log are reduced over both: those of one process on all data.
    ranks = [_metrics(out / "seen", k) for k in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert ranks[0]["metrics"] == ranks[1]["metrics"]
    (checkpoint,) = (out / "checkpoints").glob("*.ckpt")
    single = tmp_path / "single"
    _check(
        _run(
            _stsun(
                "validate",
                world_root,
                single,
                "--trainer.devices=1",
                f"--ckpt_path={checkpoint}",
                *_recorder(single / "seen"),
            ),
            timeout=120,
        )
    )
    reference = _metrics(single / "seen", 0)
    assert reference["world_size"] == 1
    logged = ranks[0]["metrics"]
    for key in ("loss", "miou", "accuracy"):
        assert f"val/s2_clouds/{key}" in logged
    for key in ("loss", "mae", "rmse"):
        assert f"val/canopy_height/{key}" in logged
    assert logged.keys() == reference["metrics"].keys()
    assert logged == pytest.approx(reference["metrics"], rel=1e-5, abs=1e-6)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_run_killed_mid_epoch_resumes_from_its_last_checkpoint_to_the_same_end(
    world_root, tmp_path
):
    loader = _datamodule(world_root).train_dataloader()
    assert isinstance(loader, ResumableDataLoader), (
        "StsunDataModule.loader must build a ResumableDataLoader (stsun_lightning.data."
        "sampling) for a run to resume at its place in the epoch"
    )

    def fit(name: str, *extra: str) -> subprocess.CompletedProcess:
        out = tmp_path / name
        return _run(
            _stsun(
                "fit",
                world_root,
                out,
                "--trainer.devices=1",
                "--trainer.max_epochs=2",
                "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
                f"--trainer.callbacks.dirpath={out / 'checkpoints'}",
                "--trainer.callbacks.save_last=true",
                "--trainer.callbacks.save_top_k=0",
                "--trainer.callbacks.every_n_train_steps=3",
                *_recorder(out / "seen"),
                *extra,
            ),
            timeout=150,
        )

    _check(fit("whole"))
    # 8 steps per epoch; checkpoints at steps 3, 6, 9; killed at the start of step 11.
    killed = fit(
        "crash", "--trainer.callbacks+=recording.KillAtStep", "--trainer.callbacks.step=11"
    )
    assert killed.returncode == -signal.SIGKILL
    last = tmp_path / "crash" / "checkpoints" / "last.ckpt"
    saved = torch.load(last, weights_only=True)
    assert saved["global_step"] == 9 and saved["epoch"] == 1  # mid-epoch
    _check(fit("crash", "--ckpt_path=last"))

    whole = torch.load(tmp_path / "whole" / "checkpoints" / "last.ckpt", weights_only=True)
    resumed = torch.load(last, weights_only=True)
    assert resumed["global_step"] == whole["global_step"] == 15
    # The resumed run took the batches the whole run took at the same steps...
    steps = {r["step"]: r["items"] for r in _records(tmp_path / "whole" / "seen", 0, "train")}
    after = [r for r in _records(tmp_path / "crash" / "seen", 0, "train") if r["step"] >= 9]
    # (the killed run recorded the batch of step 11, then died before training on it)
    assert [r["step"] for r in after] == [9, 10, 11, 9, 10, 11, 12, 13, 14, 15]
    assert all(r["items"] == steps[r["step"]] for r in after)
    # Every epoch drew other crops (flips keep an item's fingerprint, crops do not).
    records = _records(tmp_path / "whole" / "seen", 0, "train")
    seen = [{i for r in records if r["epoch"] == e for i in r["items"]} for e in (0, 1)]
    assert len(seen[1] - seen[0]) >= 0.75 * len(seen[1])
    # ...and ended with the same weights, optimiser, schedule and loss balance.
    assert resumed["state_dict"].keys() == whole["state_dict"].keys()
    for name, value in whole["state_dict"].items():
        if isinstance(value, torch.Tensor):
            torch.testing.assert_close(resumed["state_dict"][name], value, rtol=0, atol=0)
        else:
            assert resumed["state_dict"][name] == value, name
    for a, b in zip(
        whole["optimizer_states"][0]["state"].values(),
        resumed["optimizer_states"][0]["state"].values(),
        strict=True,
    ):
        torch.testing.assert_close(a["exp_avg"], b["exp_avg"], rtol=0, atol=0)
    assert resumed["lr_schedulers"] == whole["lr_schedulers"]
    assert resumed["loss_balance"] == whole["loss_balance"]


@pytest.fixture
def other_file_system(tmp_path):
    """A temporary folder on another file system than ``tmp_path`` (as a node's /tmp is)."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("needs /dev/shm on a file system of its own")
    folder = Path(tempfile.mkdtemp(dir=shm))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_process_killed_while_saving_resumes_from_the_previous_last_checkpoint(
    world_root, tmp_path, other_file_system
):
    out = tmp_path / "run"
    folder = out / "checkpoints"

    def fit(*extra: str) -> subprocess.CompletedProcess:
        argv = _stsun(
            "fit",
            world_root,
            out,
            "--trainer.devices=1",
            "--trainer.max_steps=6",
            "--trainer.limit_val_batches=0",
            "--trainer.num_sanity_val_steps=0",
            "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
            f"--trainer.callbacks.dirpath={folder}",
            "--trainer.callbacks.save_last=true",
            "--trainer.callbacks.save_top_k=0",
            "--trainer.callbacks.every_n_train_steps=2",
            *extra,
        )
        # $TMPDIR on another file system, as on a cluster node: Lightning's own writer
        # then copies its temporary file into last.ckpt, which a kill leaves half-written.
        return _run(argv, timeout=150, TMPDIR=str(other_file_system))

    # Checkpoints at steps 2, 4 and 6: killed while writing the one of step 4.
    killed = fit("--trainer.callbacks+=recording.KillWhileSaving", "--trainer.callbacks.save=2")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-4000:]
    previous = torch.load(folder / "last.ckpt", weights_only=True)
    assert previous["global_step"] == 2
    assert list(folder.glob(".last.ckpt.*.part")), "the process died before writing"

    _check(fit("--ckpt_path=last"))
    resumed = torch.load(folder / "last.ckpt", weights_only=True)
    assert resumed["global_step"] == 6
    assert sorted(p.name for p in folder.iterdir()) == ["last.ckpt"]  # partial file removed


def _states(folder: Path, rank: int) -> dict[int, dict]:
    lines = (folder / f"states_rank{rank}.jsonl").read_text().splitlines()
    return {r["step"]: r for r in map(json.loads, lines)}


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_nan_on_one_rank_skips_the_step_on_every_rank_and_the_stop_is_taken_together(
    world_root, tmp_path
):
    out = tmp_path / "nan"
    result = _run(
        _stsun(
            "fit",
            world_root,
            out,
            "--trainer.strategy=ddp",
            "--trainer.devices=2",
            "--trainer.max_steps=8",
            "--trainer.limit_val_batches=0",
            "--trainer.num_sanity_val_steps=0",
            "--trainer.enable_checkpointing=false",
            "--model.max_nonfinite_losses=1",
            "--model.loss_balance=initial_mean",
            "--model.balance_batches=10",
            # Rank 0's batch of step 2 and rank 1's of step 4 overflow to NaN.
            "--trainer.callbacks+=recording.PoisonBatches",
            "--trainer.callbacks.ranks=[0,1]",
            "--trainer.callbacks.steps=[2,4]",
            "--trainer.callbacks+=recording.StepStates",
            f"--trainer.callbacks.folder={out / 'states'}",
        ),
        timeout=240,  # a rank left waiting in a collective would run into this
    )
    # Rank 1 saw the second NaN, past the limit; rank 0 stops with it, at the same step.
    assert result.returncode != 0
    assert (
        "Stopping at step 4: 2 steps had a non-finite loss (limit max_nonfinite_losses=1); "
        "the last on 1 other rank(s)" in result.stderr
    ), result.stderr[-4000:]
    ranks = [_states(out / "states", r) for r in (0, 1)]
    assert [sorted(r) for r in ranks] == [[0, 1, 2, 3, 4]] * 2
    assert ranks[0] == ranks[1]  # the same weights, moments, schedule, count and balance
    states = ranks[0]
    for key in ("params", "optimizer", "lr"):
        assert states[2][key] == states[3][key], f"the skipped step moved the {key}"
        assert states[1][key] != states[2][key] and states[3][key] != states[4][key]
    assert [states[s]["skipped"] for s in range(5)] == [0, 0, 0, 1, 1]
    # The balance measured both ranks' batches (two a step), not the skipped step's.
    measured = [sum(states[s]["balance"]["batches"].values()) for s in range(5)]
    assert measured == [0, 2, 4, 4, 6]


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_bf16_mixed_trains_with_finite_losses_and_float32_heads(world_root, tmp_path):
    cli = build_cli(
        [
            *_data_args(world_root),
            "--trainer.accelerator=cpu",
            "--trainer.precision=bf16-mixed",
            "--data.train_batches_per_epoch=4",
            "--trainer.max_epochs=1",
            "--trainer.limit_val_batches=2",
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.enable_progress_bar=false",
            "--trainer.logger=false",
            "--trainer.enable_checkpointing=false",
        ],
        run=False,
    )
    dtypes: dict[str, set[torch.dtype]] = {"trunk linears": set(), "heads": set()}
    network = cli.model.model
    for module in network.date_trunk.modules():
        if isinstance(module, torch.nn.Linear):
            module.register_forward_hook(lambda m, i, o: dtypes["trunk linears"].add(o.dtype))
    for head in (network.category_head, network.value_head):
        head.register_forward_hook(lambda m, i, o: dtypes["heads"].add(o.dtype))
    losses: list[float] = []
    original = cli.model.training_step

    def recorded(batch, batch_idx):
        loss = original(batch, batch_idx)
        losses.append(float(loss.detach()))
        assert loss.dtype == torch.float32
        return loss

    cli.model.training_step = recorded
    cli.trainer.fit(cli.model, cli.datamodule)
    assert cli.trainer.precision == "bf16-mixed"
    assert len(losses) == 4 and all(torch.isfinite(torch.tensor(losses)))
    assert dtypes == {"trunk linears": {torch.bfloat16}, "heads": {torch.float32}}
    logged = {k: v for k, v in cli.trainer.callback_metrics.items() if k.startswith("val/")}
    assert logged and all(torch.isfinite(v) for v in logged.values())


SLURM_2_NODES = {
    "SLURM_JOB_ID": "4242",
    "SLURM_JOB_NAME": "stsun",
    "SLURM_NNODES": "2",
    "SLURM_JOB_NUM_NODES": "2",
    "SLURM_NTASKS": "4",
    "SLURM_NTASKS_PER_NODE": "2",
    "SLURM_NODELIST": "gpu[07-08]",
    "SLURM_NODEID": "1",
    "SLURM_PROCID": "3",
    "SLURM_LOCALID": "1",
}


def test_slurm_variables_of_a_two_node_job_set_the_ranks(world_root, monkeypatch):
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    for name in list(os.environ):
        if name.startswith("SLURM_") or name in ("LOCAL_RANK", "NODE_RANK", "MASTER_PORT"):
            monkeypatch.delenv(name)
    for name, value in SLURM_2_NODES.items():
        monkeypatch.setenv(name, value)
    cli = build_cli(
        [
            *_data_args(world_root),
            "--trainer.accelerator=cpu",
            "--trainer.strategy=ddp",
            "--trainer.num_nodes=2",
            "--trainer.devices=2",
            "--trainer.logger=false",
        ],
        run=False,
    )
    trainer = cli.trainer
    environment = trainer.strategy.cluster_environment
    assert isinstance(environment, SLURMEnvironment)
    assert (trainer.world_size, trainer.node_rank, trainer.local_rank, trainer.global_rank) == (
        4,
        1,
        1,
        3,
    )
    assert environment.main_address == "gpu07"  # the first node of the list
    assert environment.main_port == 15000 + 4242  # Lightning: from the job id, same on all
    # Requeued on the time limit: the sbatch template sends SIGUSR1 before it.
    assert environment.auto_requeue and environment.requeue_signal == signal.SIGUSR1


def test_the_sampler_resumes_after_the_batches_done_and_takes_lightnings_epoch():
    sizes, kwargs = [10, 6], dict(batch_size=2, num_batches=6, seed=1)
    sampler = SourceBatchSampler(sizes, **kwargs)
    sampler.sampler.set_epoch(3)  # where Lightning sets the epoch of a batch sampler
    assert sampler.epoch == 3
    epoch = [[key.index for key in batch] for batch in sampler]
    dataset = EpochConcatDataset([torch.utils.data.TensorDataset(torch.arange(sum(sizes)))])
    loader = ResumableDataLoader(dataset, batch_sampler=sampler)
    iterator = iter(loader)
    [next(iterator) for _ in range(2)]
    state = loader.state_dict()
    assert state == {"epoch": 3, "batches_done": 2, "world_size": 1}

    again = ResumableDataLoader(dataset, batch_sampler=SourceBatchSampler(sizes, **kwargs))
    again.load_state_dict(state)
    assert [b[0].tolist() for b in again] == epoch[2:]
    assert again.state_dict()["batches_done"] == len(epoch)
    assert [b[0].tolist() for b in again] == epoch  # the next pass starts from the beginning
    # Another epoch is not skipped into.
    other = ResumableDataLoader(dataset, batch_sampler=SourceBatchSampler(sizes, **kwargs))
    other.load_state_dict(state)
    other.batch_sampler.set_epoch(4)
    assert len(list(other)) == len(epoch)


def test_a_run_resumed_on_more_ranks_keeps_its_share_of_the_epoch_done():
    sampler = SourceBatchSampler([40], batch_size=2, num_batches=12, rank=1, world_size=4)
    dataset = EpochConcatDataset([torch.utils.data.TensorDataset(torch.arange(40))])
    loader = ResumableDataLoader(dataset, batch_sampler=sampler)
    loader.load_state_dict({"epoch": 0, "batches_done": 4, "world_size": 2})  # 8 of 12 done
    assert len(list(loader)) == 3 - 2
