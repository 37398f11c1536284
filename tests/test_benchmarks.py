"""Fast checks of the benchmark runner's README and of the accuracy benchmark's pieces."""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

import benchmarks.__main__ as runner  # noqa: E402

import accuracy  # noqa: E402
from accuracy_data import (  # noqa: E402
    LANDCOVER_SPEC,
    date_pool,
    drop_bands,
    make_batch,
    make_layouts,
    mask_bands,
    random_crops,
    render_labels,
    render_stack,
    select_dates,
    standardise,
    subsample_dates,
)
from accuracy_report import combine_runs, markdown, merge_seeds, write_report  # noqa: E402
from accuracy_train import UnetBaseline, fit, scores  # noqa: E402
from joint_ablation import combine  # noqa: E402
from joint_ablation import markdown as joint_markdown  # noqa: E402
from stsun_lightning.batch import OutputKind  # noqa: E402
from stsun_lightning.data.sensors import get_sensor  # noqa: E402
from stsun_lightning.models import create_model  # noqa: E402
from stsun_lightning.models.spectral import IndexBandEncoder  # noqa: E402
from stsun_lightning.tasks.metrics import ClassMetrics  # noqa: E402

S2 = get_sensor("sentinel2_l2a").bands
CLASSES = ("water", "tree_cover", "cropland", "built_up", "bare_soil", "grassland")


@pytest.fixture(scope="module")
def layouts():
    return make_layouts(0, 2, 240.0, LANDCOVER_SPEC)


@pytest.fixture(scope="module")
def stack(layouts):
    rendered = render_stack(layouts, S2, 10.0, date_pool(150, 200, 25), "coarse", 0)
    return standardise(rendered)[0]


# --- band encodings ---------------------------------------------------------------------


def test_index_band_encoder_rows_follow_position_not_metadata():
    encoder = IndexBandEncoder(8, max_bands=4)
    wavelengths = torch.tensor([[490.0, 560.0, 665.0], [2200.0, 440.0, 865.0]])
    out = encoder(wavelengths, torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.long))
    assert out.shape == (2, 3, 8)
    assert torch.equal(out[0], encoder.table.weight[:3])
    assert torch.equal(out[0], out[1])
    with pytest.raises(ValueError, match="4 band positions, got 5"):
        encoder(torch.zeros(1, 5), torch.zeros(1, 5), torch.zeros(1, 5, dtype=torch.long))


def test_create_model_band_encoding(stack):
    torch.manual_seed(0)
    index = create_model("stsun_tiny", categories=CLASSES, band_encoding="index")
    assert isinstance(index.band_encoder, IndexBandEncoder)
    assert index.band_encoder.table.embedding_dim == 32  # stsun_tiny's band_dim
    metadata = create_model("stsun_tiny", categories=CLASSES)
    assert not isinstance(metadata.band_encoder, IndexBandEncoder)
    with pytest.raises(ValueError, match="band_encoding"):
        create_model("stsun_tiny", band_encoding="names")

    batch = make_batch(stack.image[:1, :1], stack.dates[:1, :1], S2, 10.0, 0, 6)
    shifted = make_batch(stack.image[:1, :1], stack.dates[:1, :1], S2, 10.0, 0, 6)
    shifted.wavelength_nm = shifted.wavelength_nm * 1.5
    index.eval()
    metadata.eval()
    with torch.no_grad():
        assert torch.equal(index(batch).logits, index(shifted).logits)
        assert not torch.allclose(metadata(batch).logits, metadata(shifted).logits)


# --- accuracy transforms -----------------------------------------------------------------


def test_render_stack_shapes_and_labels_at_three_gsds(layouts):
    for gsd, size in ((10.0, 24), (20.0, 12), (30.0, 8)):
        rendered = render_stack(layouts, S2, gsd, date_pool(180, 180, 1), "coarse", 0)
        assert rendered.image.shape == (2, 1, 12, size, size)
        assert rendered.label.shape == (2, size, size)
        assert torch.isfinite(rendered.image).all()
        assert rendered.gsd_m == gsd
        assert int(rendered.label.min()) >= -1 and int(rendered.label.max()) <= 5
        assert torch.equal(rendered.label, render_labels(layouts, gsd, "coarse"))
    # Coarser pixels are averages of the same ground: band means agree within noise.
    fine = render_stack(layouts, S2, 10.0, date_pool(180, 180, 1), "coarse", 0)
    coarse = render_stack(layouts, S2, 30.0, date_pool(180, 180, 1), "coarse", 0)
    ratio = coarse.image.mean((0, 1, 3, 4)) / fine.image.mean((0, 1, 3, 4))
    assert torch.allclose(ratio, torch.ones(12), atol=0.15)
    with pytest.raises(ValueError, match="multiple of 5"):
        render_stack(layouts, S2, 12.0, date_pool(180, 180, 1), "coarse", 0)
    with pytest.raises(ValueError, match="multiple of 30"):
        make_layouts(0, 1, 250.0, LANDCOVER_SPEC)


def test_standardise_uses_given_statistics(stack, layouts):
    flat = stack.image.transpose(0, 2).flatten(1)
    assert torch.allclose(flat.mean(1), torch.zeros(12), atol=1e-4)
    assert torch.allclose(flat.std(1), torch.ones(12), atol=1e-3)
    raw = render_stack(layouts, S2, 10.0, date_pool(150, 200, 25), "coarse", 0)
    stats = (torch.full((12,), 0.5), torch.full((12,), 2.0))
    again, used = standardise(raw, stats)
    assert used is stats
    assert torch.allclose(again.image, (raw.image - 0.5) / 2.0)


def test_random_crops_and_dates(stack):
    generator = torch.Generator().manual_seed(0)
    image, dates, label = random_crops(stack, 16, 5, generator)
    assert image.shape == (5, 3, 12, 16, 16)
    assert dates.shape == (5, 3) and label.shape == (5, 16, 16)
    kept, kept_dates = select_dates(image, dates, [0, 2])
    assert kept.shape == (5, 2, 12, 16, 16)
    assert torch.equal(kept[:, 1], image[:, 2]) and torch.equal(kept_dates[:, 1], dates[:, 2])


def test_subsample_dates_leaves_a_gap():
    days = [float(d) for d in range(0, 296, 8)]  # 37 dates
    for seed in range(20):
        generator = torch.Generator().manual_seed(seed)
        chosen = subsample_dates(days, 24, 60.0, generator)
        assert len(chosen) == 24 and chosen == sorted(set(chosen))
        picked = [days[i] for i in chosen]
        stretches = [picked[0] - days[0], days[-1] - picked[-1]]
        stretches += [b - a for a, b in itertools.pairwise(picked)]
        assert max(stretches) >= 60.0
    generator = torch.Generator().manual_seed(0)
    assert subsample_dates(days, 37, 60.0, generator) == list(range(37))  # gap dropped
    with pytest.raises(ValueError, match="count"):
        subsample_dates(days, 38, 0.0, generator)


def test_make_batch_output_slots(stack):
    state = make_batch(stack.image[:2], stack.dates[:2], S2, 10.0, 0, 6, stack.label[:2])
    assert state.outputs[0, 0].tolist() == [0.0, 2.0, -1.0]  # state at the last date
    assert state.target.shape == (2, 1, 24, 24)
    series = make_batch(
        stack.image[:1], stack.dates[:1], S2, 10.0, 4, 6, output=OutputKind.AGGREGATE
    )
    assert series.outputs[0, 0].tolist() == [2.0, -1.0, -1.0]
    assert series.target is None and series.categories.tolist() == [list(range(6))]


def test_band_removal_masked_equals_dropped_for_metadata(stack):
    batch = make_batch(stack.image[:1, :1], stack.dates[:1, :1], S2, 10.0, 0, 6)
    removed = [0, 10, 11]
    masked, dropped = mask_bands(batch, removed), drop_bands(batch, removed)
    assert masked.image.shape == batch.image.shape
    assert masked.band_mask[0, 0].tolist() == [i not in removed for i in range(12)]
    assert torch.isnan(masked.image[:, :, removed]).all()
    assert dropped.image.shape == (1, 1, 9, 24, 24)
    assert torch.equal(dropped.image[:, :, 0], batch.image[:, :, 1])
    assert dropped.wavelength_nm[0, -1] == batch.wavelength_nm[0, 9]
    torch.manual_seed(0)
    model = create_model("stsun_tiny", categories=CLASSES).eval()
    with torch.no_grad():
        assert torch.allclose(model(masked).logits, model(dropped).logits, atol=1e-4)


# --- training and scoring helpers --------------------------------------------------------


def test_scores_of_the_accuracy_loops():
    target = torch.tensor([0, 0, 1, 1, 2, -1])
    prediction = torch.tensor([0, 1, 1, 1, 2, 0])
    metrics = ClassMetrics(("a", "b", "c"))
    metrics.update(prediction, target)
    result = scores(metrics)
    assert result["iou_a"] == 0.5 and result["iou_b"] == pytest.approx(2 / 3, abs=1e-4)
    assert result["miou"] == pytest.approx((0.5 + 2 / 3 + 1) / 3, abs=1e-4)
    assert not any(k.startswith("f1_") for k in result)


def test_unet_baseline_takes_any_size():
    model = UnetBaseline(2 * 3, 4).eval()
    image = torch.randn(1, 2, 3, 40, 48)
    image[0, 0, 0, 0, 0] = float("nan")
    with torch.no_grad():
        out = model(image)
    assert out.shape == (1, 4, 40, 48) and torch.isfinite(out).all()


def test_fit_trains_only_what_it_is_given():
    torch.manual_seed(0)
    trained, frozen = torch.nn.Linear(3, 1), torch.nn.Linear(3, 1)
    frozen_before = frozen.weight.detach().clone()
    x = torch.randn(32, 3)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]])
    result = fit(
        trained,
        lambda _: ((trained(x) + frozen(x).detach() - y) ** 2).mean(),
        60,
        learning_rate=0.1,
        weight_decay=0.0,
    )
    assert result["last_loss"] < result["first_loss"]
    assert torch.equal(frozen.weight, frozen_before)


def test_landcover_and_time_series_rows_end_to_end():
    # 660 m scenes (66 px) hold the coarse-crops network's windows of 2 × 32 px.
    cfg = accuracy.Config("quick", 0, 660.0, 2, 1, 32, 2, 2, 2, 2, 32, 2, 2, 1, 8, 64, 2, 32, 2, 7)
    part = accuracy.landcover(cfg, {"unseen_sensor", "new_classes", "resolution"})
    rows = part["rows"] + part["rows_new_classes"]
    assert {r["experiment"] for r in rows} == {"unseen_sensor", "resolution", "new_classes"}
    unseen = [r for r in rows if r["experiment"] == "unseen_sensor"]
    # Reference, Landsat-8 (B1-B7; with B10, B11) and 3 removals against the index
    # baseline, the same 6 against ours trained without band dropout (detail rows, no
    # goal), then the same 6 trained with virtual sensors.
    assert len(unseen) == 3 * (1 + 2 + 3)
    assert [r["met"] for r in unseen[6:12]] == [None] * 6
    virtual = unseen[12:]
    assert all(r["setting"].endswith("trained with virtual sensors") for r in virtual)
    assert [r["met"] is None for r in virtual] == [True] + [False] * 5
    assert "stsun_virtual_sensors" in part["scores"]
    coarse = [r for r in rows if "trained with coarse crops" in r["setting"]]
    assert [r["setting"].split(",")[0] for r in coarse] == ["10 m", "20 m", "30 m"]
    assert [r["met"] is None for r in coarse] == [True, False, False]
    assert set(part["scores"]["stsun_coarse_crops"]) == {
        "sentinel2_10m", "sentinel2_20m", "sentinel2_30m"
    }  # fmt: skip
    assert part["band_dropout"] == accuracy.BAND_DROPOUT
    assert all(r["met"] in (True, False, None) for r in rows)
    assert part["new_classes"]["new_names"] == ["building", "road"]
    series = accuracy.time_series(cfg)
    settings = [r["setting"] for r in series["rows"]]
    assert settings[0].startswith("8 dates") and len(settings) == 4
    assert series["dates"]["fixed_schedule_doy"] == sorted(series["dates"]["fixed_schedule_doy"])


# --- reports and the runner --------------------------------------------------------------


def _results(mode: str) -> dict:
    rows = [
        accuracy._row("unseen_sensor", "Landsat-8", "ratio", 0.95, "index", 0.5, ">= 0.90", True),
        accuracy._row("time_series", "2 dates", "mIoU", 0.4, "fixed", 0.5, ">= baseline", False),
        accuracy._row("time_series", "8 dates", "mIoU", 0.6, "fixed", 0.6, "reference", None),
    ]
    return {
        "mode": mode,
        "command": "python benchmarks/accuracy.py",
        "model": "stsun_tiny",
        "seed": 0,
        "machine": "test",
        "torch": "x",
        "seconds": {"total": 60.0, "landcover": 30.0, "time_series": 30.0},
        "experiments": ["unseen_sensor", "time_series"],
        "rows": rows,
        "goals": [{"goal": r["setting"], "value": r["value"], "met": r["met"]} for r in rows[:2]],
    }


def test_accuracy_markdown_tables():
    page = markdown(_results("full"))
    assert "## 1. Unseen sensor" in page and "## 5. Variable time series" in page
    assert "| Landsat-8 | ratio | 0.950 | index | 0.500 | >= 0.90 | met |" in page
    assert "| 2 dates | mIoU | 0.400 | fixed | 0.500 | >= baseline | not met |" in page
    assert "Goals met: 1 of 2." in page
    assert "Quick mode" not in page
    assert "Quick mode" in markdown(_results("quick"))


def test_seeds_merge_into_mean_and_std(tmp_path):
    runs = []
    for seed, value in ((0, 0.8), (1, 0.9), (2, 1.0)):
        run = _results("full")
        run["seed"], run["rows"][0]["value"] = seed, value
        runs.append(run)
    merged = merge_seeds(runs)
    landsat = merged["rows"][0]
    assert landsat["value"] == pytest.approx(0.9) and landsat["value_std"] == pytest.approx(0.1)
    assert landsat["values"] == [0.8, 0.9, 1.0] and landsat["met"] is True
    assert merged["rows"][1]["met"] is False  # 0.4 against a baseline of 0.5
    assert "| Landsat-8 | ratio | 0.900 ± 0.100 | index | 0.500 ± 0.000 |" in markdown(merged)
    write_report(merged, tmp_path, "accuracy_merged")
    assert json.loads((tmp_path / "accuracy_merged.json").read_text())["seeds"] == [0, 1, 2]
    with pytest.raises(ValueError, match="distinct seeds"):
        merge_seeds([runs[0], runs[0]])


def test_a_rerun_of_one_seed_updates_its_rows():
    full, rerun = _results("full"), _results("full")
    rerun["rows"] = [
        {**rerun["rows"][0], "value": 0.97},
        accuracy._row("resolution", "30 m, coarse", "ratio", 0.91, "plain", 0.7, ">= 0.90", True),
    ]
    rerun["experiments"], rerun["command"] = ["unseen_sensor", "resolution"], "rerun"
    other_seed = {**_results("full"), "seed": 1}
    combined = combine_runs([full, other_seed, rerun])
    assert [run["seed"] for run in combined] == [0, 1]
    first = combined[0]
    assert [r["value"] for r in first["rows"]] == [0.97, 0.4, 0.6, 0.91]
    assert first["experiments"] == ["unseen_sensor", "resolution", "time_series"]
    assert first["command"] == "python benchmarks/accuracy.py; rerun"
    assert first["seconds"]["total"] == 120.0
    assert full["rows"][0]["value"] == 0.95  # the inputs are left as they were
    merged = merge_seeds(combined)
    coarse = next(r for r in merged["rows"] if r["setting"] == "30 m, coarse")
    assert coarse["seeds"] == [0] and coarse["met"] is True
    with pytest.raises(ValueError, match="one mode"):
        combine_runs([full, _results("quick")])


def _joint_run(seeds, variants):
    def variant(value):
        scores = {"crops": {"miou": value}, "canopy": {"mae": 2.0}}
        return {"scores": scores, "mean_miou": value, "parameters": 1000}

    per_seed = {
        str(s): {"steps": 10, "variants": {n: variant(v + s / 10) for n, v in variants.items()}}
        for s in seeds
    }
    return {"command": f"run {sorted(variants)}", "seeds": seeds, "per_seed": per_seed}


def test_joint_ablation_runs_combine_by_variant():
    earlier = _joint_run([0, 1], {"default": 0.5, "probe": 0.55})
    later = _joint_run([0, 1], {"probe": 0.6, "new": 0.7})
    combined = combine([earlier, later])
    assert list(combined["per_seed"]["1"]["variants"]) == ["default", "probe", "new"]
    assert combined["per_seed"]["1"]["variants"]["probe"]["mean_miou"] == 0.7
    assert combined["per_seed"]["0"]["variants"]["default"]["mean_miou"] == 0.5
    assert earlier["per_seed"]["0"]["variants"].keys() == {"default", "probe"}  # untouched
    table = joint_markdown(combined)
    assert "| new | 1,000 | 0.750 ± 0.071 | 0.750 |" in table
    # A seed run as its own command joins the others; a variant it lacks keeps its seeds.
    third = combine([combined, _joint_run([2], {"default": 0.5})])
    assert third["seeds"] == [0, 1, 2]
    table = joint_markdown(third)
    assert "| default | 1,000 | 0.600 ± 0.100 | 0.600 |" in table
    assert "| new (seeds 0, 1) | 1,000 | 0.750 ± 0.071 | 0.750 |" in table
    other_world = _joint_run([3], {"default": 0.5})
    other_world["per_seed"]["3"]["val_scenes"] = 4
    with pytest.raises(ValueError, match="same --val-scenes, got \\[1, 4\\]"):
        combine([earlier, other_world])
    quick = _joint_run([3], {"default": 0.5})
    quick["per_seed"]["3"]["steps"] = 70
    with pytest.raises(ValueError, match="same steps \\(--quick or not\\), got \\[10, 70\\]"):
        combine([earlier, quick])
    one_source = _joint_run([3], {"default": 0.5})
    one_source["per_seed"]["3"]["sources"] = ["aerial_landcover"]
    with pytest.raises(ValueError, match="same --sources"):
        combine([earlier, one_source])


def test_write_report_files(tmp_path):
    write_report(_results("quick"), tmp_path)
    saved = json.loads((tmp_path / "accuracy_quick.json").read_text())
    assert saved["rows"][0]["setting"] == "Landsat-8"
    assert (tmp_path / "accuracy_quick.md").read_text().startswith("# Accuracy on SpectralWorld")
    assert (tmp_path / "accuracy_quick.png").read_bytes()[:4] == b"\x89PNG"


def test_goal_summary_from_json_and_tables(tmp_path):
    (tmp_path / "a.json").write_text(
        json.dumps({"goals": [{"goal": "g1", "met": True}, {"goal": "g2", "passed": False}]})
    )
    assert runner.goal_summary("a", tmp_path) == "1 of 2 goals met; not met: g2"
    (tmp_path / "b.md").write_text(
        "# B\n\n| regime | patch | ratio | goal |\n|---|---:|---:|---|\n"
        "| deflate | 64 | 0.9 | met |\n| cached | 256 | 0.5 | not met |\n\ntext | not a table\n"
    )
    assert runner.goal_summary("b", tmp_path) == "1 of 2 goals met; not met: cached, 256, 0.5"
    (tmp_path / "c.md").write_text("# C\n\n| size | MiB |\n|---|---:|\n| 512 | 40 |\n")
    assert runner.goal_summary("c", tmp_path).startswith("no pass/fail goal")


def test_assemble_readme(tmp_path):
    (tmp_path / "accuracy_quick.md").write_text("# Accuracy (quick)\n\n## 1. Part\n\nbody\n")
    (tmp_path / "accuracy_quick.json").write_text(
        json.dumps({"goals": [{"goal": "x", "met": True}]})
    )
    (tmp_path / "model_speed.md").write_text(
        "# Speed\n\n| goal | result |\n|---|---|\n| s | pass |\n"
    )
    (tmp_path / "zz_other.md").write_text("# Other\n")
    (tmp_path / "README.md").write_text("STALE-README")
    runs = [{"name": "accuracy", "command": "python benchmarks/accuracy.py --quick",
             "returncode": 0, "seconds": 12.0}]  # fmt: skip
    text = runner.assemble_readme(tmp_path, runs)
    assert text == (tmp_path / "README.md").read_text()
    assert "| accuracy | `python benchmarks/accuracy.py --quick` | ok | 12 |" in text
    contents = text[text.index("## Contents") :]
    assert contents.index("model_speed.md") < contents.index("accuracy_quick.md")
    assert contents.index("accuracy_quick.md") < contents.index("zz_other.md")
    assert "`python benchmarks/accuracy.py --quick` | 1 of 1 goals met |" in text
    assert "`python benchmarks/model_speed.py` | 1 of 1 goals met |" in text
    assert "### Accuracy (quick)" in text and "#### 1. Part" in text
    assert "Reproduce: `see the page`" in text
    assert "STALE-README" not in text


def test_runner_lists_every_script():
    scripts = {p.name for p in (ROOT / "benchmarks").glob("*.py")}
    for benchmark in runner.BENCHMARKS:
        assert benchmark.script in scripts
        assert benchmark.command(True)[-1] == "--quick"
    assert runner.reproduce_command("demo") == "make demo"


def test_ablation_report_pairs_each_change_off_and_on(tmp_path):
    import ablation_report

    columns = {c: 0.5 for c in (*ablation_report.TRANSFERS, "Sentinel-2 10 m mIoU")}
    variants = {
        name: {**columns, "Sentinel-2 at 30 m": value, "Sentinel-2 at 30 m std": 0.01}
        for name, value in (
            ("earlier", 0.8),
            ("+response", 0.7),
            ("+band set", 0.6),
            ("+bilinear", 0.5),
            ("default (+response, +band set)", 0.75),
            ("all", 0.5),
            ("default + coarse crops 0.5", 0.95),
            ("default + coarsened batches 0.5", 0.9),
        )
    }
    variants["default (+response, +band set)"]["Landsat-8 B1-B7 + B10-B11 declared optical"] = 0.4
    (tmp_path / "transfer_ablation.json").write_text(json.dumps({"variants": variants}))
    finetune = {
        "config": {"counts": [4]},
        "rows": [
            {"patches": 4, "method": m, "miou": v}
            for m, v in (("rows", 0.6), ("rows_not_imprinted", 0.5), ("rows_known_frozen", 0.3))
        ],
    }
    (tmp_path / "finetune.json").write_text(json.dumps(finetune))
    rows = ablation_report.main(["--results", str(tmp_path)])
    by = {(r["change"], r["experiment"]): r for r in rows}
    coarse = by[
        ("coarse crops (half the crops drawn 2-3 × larger, at 2-3 × GSD)", "Sentinel-2 at 30 m")
    ]
    assert (coarse["off"], coarse["on"], coarse["difference"]) == (0.75, 0.95, 0.2)
    larger = by[
        ("drawn larger (against half the batches coarsened as drawn)", "Sentinel-2 at 30 m")
    ]
    assert (larger["off"], larger["on"]) == (0.9, 0.95)
    thermal = by[
        ("thermal modality (B10-B11 declared optical → thermal)", "Landsat-8 B1-B7 + B10-B11")
    ]
    assert (thermal["off"], thermal["on"]) == (0.4, 0.5)
    assert by[("imprinted new rows", "new classes, 4 patches (mIoU)")]["difference"] == 0.1
    page = (tmp_path / "ablation.md").read_text()
    assert "0.950 ± 0.010" in page and "Not found, so left out: `accuracy.json`" in page


def test_demo_spread_scores_scenes_and_pairs_the_draws():
    from demo_spread import bootstrap, score, spread_of_runs
    from stsun_lightning.data.sources import SourceInfo

    source = SourceInfo("s", "semantic_segmentation", categories=("a", "b"))
    target = torch.zeros(1, 1, 4, 4, dtype=torch.long)
    target[..., 2:] = 1

    def logits(classes):  # (1, To=1, K=2, 4, 4) with the argmax at ``classes``
        return torch.nn.functional.one_hot(classes, 2).permute(0, 1, 4, 2, 3).float()

    right = (logits(target), target)
    wrong = (logits(1 - target), target)
    good, bad = [right, right, right], [right, right, wrong]
    assert score(source, good, "miou", [0, 1, 2]) == 1.0
    assert score(source, bad, "miou", [2, 2]) == 0.0
    assert score(source, bad, "miou", [0, 1]) == 1.0
    scorers = [lambda p: score(source, good, "miou", p), lambda p: score(source, bad, "miou", p)]
    drawn = bootstrap(scorers, 3, 50, seed=0)
    assert drawn.shape == (50, 2)
    assert (drawn[:, 0] == 1.0).all()  # every draw of the perfect run scores 1
    assert drawn[:, 1].std() > 0  # the run with one wrong scene moves with the draw
    assert (bootstrap(scorers, 3, 50, seed=0) == drawn).all()  # the draws are seeded
    full = [s([0, 1, 2]) for s in scorers]
    entry = spread_of_runs(["good", "bad"], full, drawn)
    assert entry["largest_gap_runs"] == ["good", "bad"]
    assert entry["largest_gap"] == pytest.approx(1.0 - full[1], abs=1e-4)
    assert entry["largest_gap_std_over_scenes"] == pytest.approx(drawn[:, 1].std(), abs=1e-4)


def test_joint_ablation_takes_earlier_unets_only_of_the_same_settings():
    from joint_ablation import _earlier_unets

    unets = {"scores": {"a": {"miou": 0.5}}, "mean_miou": 0.5, "parameters": 1}
    earlier = {"per_seed": {"0": {"steps": 1750, "val_scenes": 4, "unet_specialists": unets}}}
    assert _earlier_unets(earlier, 0, {"steps": 1750, "val_scenes": 4}) == unets
    with pytest.raises(ValueError, match="expected val_scenes = 2"):
        _earlier_unets(earlier, 0, {"steps": 1750, "val_scenes": 2})
    with pytest.raises(ValueError, match="U-Net specialists of seed 1"):
        _earlier_unets(earlier, 1, {"steps": 1750, "val_scenes": 4})
    # Runs on some sources compare with those sources' U-Nets only.
    unets = {"scores": {"a": {"miou": 0.5}, "b": {"miou": 0.7}}, "mean_miou": 0.6, "parameters": 1}
    earlier["per_seed"]["0"]["unet_specialists"] = unets
    some = _earlier_unets(earlier, 0, {"steps": 1750, "val_scenes": 4}, ["b"])
    assert some["scores"] == {"b": {"miou": 0.7}} and some["mean_miou"] == 0.7
