"""The demo end to end, shortened: train, validate, report goals, predict scenes to COGs."""

import json
from pathlib import Path

import pytest
import rasterio

from stsun_lightning.demo import GOALS, run_demo

CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "demo.yaml")


@pytest.mark.slow
def test_the_demo_trains_reports_and_writes_georeferenced_predictions(tmp_path):
    summary = run_demo(
        CONFIG,
        [
            f"--data.root={tmp_path / 'world'}",
            "--data.scene_size=64",
            "--data.scenes_per_source=3",
            "--data.val_scenes=2",  # more than one held out, as in the config
            "--data.patch_size=32",
            "--data.num_workers=0",
            "--data.train_batches_per_epoch=3",
            "--trainer.max_epochs=1",
            "--trainer.check_val_every_n_epoch=1",
            "--trainer.enable_progress_bar=false",
            f"--trainer.default_root_dir={tmp_path / 'run'}",
        ],
    )
    assert summary["steps"] == 3
    assert {row["source"] for row in summary["goals"]} == set(GOALS)
    run_dir = Path(summary["checkpoint"]).parents[1]
    assert json.loads((run_dir / "demo_metrics.json").read_text())["goals"] == summary["goals"]
    maps = [Path(p) for p in summary["predictions"] if not p.endswith("_probabilities.tif")]
    # <source>/<scene>.tif for each of the two validation scenes of every source.
    assert sorted(p.parent.name for p in maps) == sorted([*GOALS, *GOALS])
    # Class probabilities beside every class map (regression has none).
    assert len(summary["predictions"]) == 2 * (2 * len(GOALS) - 1)
    for path in maps:
        source = path.parent.name
        label = next((tmp_path / "world" / source).glob("scene_*/label.tif"))
        with rasterio.open(path) as out, rasterio.open(label) as ref:
            assert out.crs == ref.crs and out.shape == ref.shape
            assert out.transform.a == pytest.approx(ref.transform.a)
            if source == "canopy_height":
                assert out.dtypes[0] == "float32" and out.tags()["VARIABLES"] == "canopy_height"
            else:
                assert out.dtypes[0] == "uint8" and "CATEGORIES" in out.tags()
