"""Whole-scene prediction under DDP with a plain Lightning Trainer, two gloo ranks on CPU.

Lightning's default ``use_distributed_sampler=True`` rebuilds the predict batch sampler
around a ``DistributedSampler``; every scene must still be written whole by one rank, with
no window lost or predicted twice, and the files must be those of one process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSamplerWrapper
from rasters import CATEGORIES, predict, s2_input, trained_task, write_raster
from torch.utils.data import SequentialSampler

from stsun_lightning.data import RasterPredictionDataModule
from stsun_lightning.data.datasets.windows import SceneWindowDataset
from stsun_lightning.data.samplers.jobs import JobBatchSampler

__all__ = ["trained_task"]  # the fixture, imported for pytest

HERE = Path(__file__).parent
STATISTICS = {"s2": {"mean": [1000.0] * 4, "std": [500.0] * 4}}
DATA = {"window": 48, "overlap": 16, "batch_size": 3}
SCENES = {"north": (96, 80), "south": (70, 130), "east": (64, 64)}  # (height, width)

_SCRIPT = """
import json, sys
from pathlib import Path

import lightning as L
import torch

sys.path.insert(0, {here!r})
from rasters import CATEGORIES, TRAINED_SOURCES, s2_input
from stsun_lightning.data import RasterPredictionDataModule
from stsun_lightning.predict import GeoTiffPredictionWriter
from stsun_lightning.tasks.module import StsunTask


class RecordingWriter(GeoTiffPredictionWriter):
    # Also records (scene, row, col) of every window this rank predicted.
    seen = []

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, *args):
        loaders = trainer.predict_dataloaders
        dataset = (loaders[0] if isinstance(loaders, (list, tuple)) else loaders).dataset
        for index in batch_indices:
            ref = dataset.windows[index]
            self.seen.append([dataset.jobs[ref.job].stem, ref.row, ref.col])
        super().write_on_batch_end(trainer, pl_module, prediction, batch_indices, batch, *args)


torch.set_num_threads(1)
task = StsunTask("stsun_tiny", sources=TRAINED_SOURCES)
task.load_state_dict(torch.load({weights!r}))
datamodule = RasterPredictionDataModule(
    inputs=s2_input({inputs!r}), categories=CATEGORIES, statistics={statistics!r}, **{data!r}
)
out = Path({out!r})
writer = RecordingWriter(out, probabilities="float16")
trainer = L.Trainer(
    accelerator="cpu", devices=2, strategy="ddp", use_distributed_sampler={distributed},
    logger=False, callbacks=[writer], enable_progress_bar=False, enable_model_summary=False,
    enable_checkpointing=False,
)
trainer.predict(task.eval(), datamodule=datamodule)
record = {{"written": [p.name for p in writer.written], "windows": writer.seen}}
(out / f"rank{{trainer.global_rank}}.json").write_text(json.dumps(record))
"""


def _environment() -> dict[str, str]:
    """One thread per rank, this folder importable, no cluster variables around."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "PMI_"))}
    for name in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
    env.update(OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    return env


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("scenes")
    for seed, (name, (height, width)) in enumerate(SCENES.items()):
        write_raster(folder / f"{name}.tif", height, width, seed=seed)
    return folder


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("distributed_sampler", [True, False])
def test_two_ranks_write_every_scene_whole_once_as_one_process_does(
    scenes, tmp_path, trained_task, distributed_sampler
):
    weights = tmp_path / "weights.pt"
    torch.save(trained_task.state_dict(), weights)
    out = tmp_path / "ddp"
    script = tmp_path / "predict_ddp.py"
    settings = {"here": str(HERE), "weights": str(weights), "inputs": str(scenes)}
    settings |= {"statistics": STATISTICS, "data": DATA, "out": str(out)}
    script.write_text(textwrap.dedent(_SCRIPT).format(distributed=distributed_sampler, **settings))
    result = subprocess.run(
        [sys.executable, str(script)], env=_environment(), capture_output=True, text=True,
        timeout=240, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]

    # Every window of every scene predicted exactly once, each scene by a single rank.
    datamodule = RasterPredictionDataModule(
        inputs=s2_input(str(scenes)), categories=CATEGORIES, statistics=STATISTICS, **DATA
    )
    every = SceneWindowDataset(datamodule.prediction_jobs(), datamodule.vocabularies, 48, 16)
    expected = sorted([every.jobs[w.job].stem, w.row, w.col] for w in every.windows)
    seen = [window for rank in ranks for window in rank["windows"]]
    assert sorted(seen) == expected
    owners = {stem: {r for r, rank in enumerate(ranks) for w in rank["windows"] if w[0] == stem}
              for stem in SCENES}  # fmt: skip
    assert all(len(o) == 1 for o in owners.values())
    assert set().union(*owners.values()) == {0, 1}  # both ranks had scenes
    assert sorted(name for rank in ranks for name in rank["written"]) == sorted(
        f"{s}{suffix}.tif" for s in SCENES for suffix in ("", "_probabilities")
    )

    # The files are those one process writes.
    single = predict(trained_task, tmp_path / "single", {"probabilities": "float16"},
                     inputs=s2_input(str(scenes)), statistics=STATISTICS, **DATA)  # fmt: skip
    assert len(single.written) == 2 * len(SCENES)
    for path in single.written:
        with rasterio.open(path) as one, rasterio.open(out / path.name) as two:
            assert one.tags() == two.tags() and one.shape == two.shape
            a, b = one.read().astype(np.float32), two.read().astype(np.float32)
        if path.name.endswith("_probabilities.tif"):
            np.testing.assert_allclose(a, b, atol=2e-3)
        else:  # class maps: equal but where a batch's rounding may flip a near tie
            assert (a == b).mean() > 0.999


def test_the_job_sampler_serves_its_ranks_windows_whole_inside_lightnings_distributed_sampler():
    dataset = list(range(10))  # two jobs of this rank: windows 0-5 and 6-9
    inner = SequentialSampler(dataset)
    distributed = UnrepeatedDistributedSamplerWrapper(inner, num_replicas=2, rank=1, shuffle=False)
    assert list(distributed) == [1, 3, 5, 7, 9]  # what Lightning would have predicted
    sampler = JobBatchSampler(distributed, 4, job_starts=[0, 6], rank=1, world_size=2)
    assert list(sampler) == [[0, 1, 2, 3], [4, 5], [6, 7, 8, 9]]
    assert list(sampler) == list(JobBatchSampler(inner, 4, job_starts=[0, 6]))
    assert len(sampler) == 3


def test_a_distributed_sampler_for_another_split_than_the_jobs_is_refused():
    distributed = UnrepeatedDistributedSamplerWrapper(
        SequentialSampler(range(10)), num_replicas=4, rank=1, shuffle=False
    )
    with pytest.raises(ValueError, match="use_distributed_sampler=False"):
        JobBatchSampler(distributed, 4, job_starts=[0], rank=1, world_size=2)
