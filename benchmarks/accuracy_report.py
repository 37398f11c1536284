"""Writing the accuracy benchmark's results: JSON, a Markdown page and a PNG plot.

Seeds run as separate commands (``accuracy.py --seed N --name accuracy_seedN``) are merged
into one page of mean ± standard deviation per figure::

    python benchmarks/accuracy_report.py --merge benchmarks/results/accuracy_seed*.json \
        --name accuracy

A seed's later files (``accuracy.py --only ... --name accuracy_seedN_...``) update the
rows of its earlier ones (:func:`combine_runs`).
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["combine_runs", "markdown", "merge_seeds", "spread", "write_pages", "write_report"]

_TITLES = {
    "unseen_sensor": "1. Unseen sensor (trained on Sentinel-2 only)",
    "unified": "2. Unified against specialists (equal total training steps)",
    "new_classes": "3. New class set (frozen network, a few labelled patches)",
    "resolution": "4. Other resolutions (trained at 10 m)",
    "time_series": "5. Variable time series (trained on 4 to 12 dates)",
}


_NOTES = {
    "unseen_sensor": "Trained on Sentinel-2 L2A land cover at 10 m; tested on other landscapes "
    "of the same kind. Ours embeds each band from its wavelength, bandwidth and modality; "
    "the baseline is the same network whose band c gets a learnt row c (band-index "
    "embeddings), trained on the same batches. Both are trained with band dropout (half "
    "of the windows keep a random subset of their bands: `StsunTask(band_dropout=0.5)`); "
    "the rows marked (detail) give ours trained without it. Landsat-8's bands reach the "
    "baseline in file order; removed Sentinel-2 bands reach ours dropped and the baseline "
    "masked in place (its best case). Ratios are each network's mIoU over its own "
    'in-sensor mIoU. Rows marked "trained with virtual sensors": the same network trained '
    "with half of its windows seen through a random sensor (3-13 bands of 10-200 nm FWHM, "
    "centres 400-2,400 nm outside the water-vapour bands, 10-20 m GSD, rendered from the "
    "landscape's surfaces), band metadata jittered (5 nm, 10 %) and band dropout on top; every "
    "sensor, Sentinel-2 and Landsat-8 alike, normalised with one fixed reflectance scale "
    "((reflectance - 0.2) / 0.15; thermal (K - 300) / 10) instead of its own statistics; "
    "its baseline column is ours with band dropout only.",
    "unified": "Joint: one STSUN on all seven sources for N steps; specialists: one network "
    "per source for N / 7 steps each, STSUN or smp's U-Net (ResNet-18, dates and bands "
    "stacked as channels). The goal compares the mean mIoU over the six class sources; "
    "canopy height (MAE) is listed beside it.",
    "new_classes": "The network of experiment 1, frozen. Ours learns only the category rows "
    "of the new names (every other row, and the rest of the network, unchanged); the "
    "baseline learns a new 1×1 classifier for all seven classes on the same frozen pixel "
    "features, from the same patches, for the same steps.",
    "resolution": "The network of experiment 1 (trained at 10 m only) against a U-Net trained "
    "on the same 10 m batches; the same validation landscapes rendered at 20 m and 30 m, "
    "labels the majority class under each coarse pixel. Ratios are each model's mIoU over "
    'its own 10 m mIoU. Rows marked "trained with virtual sensors": experiment 1\'s '
    "variant, whose virtual sensors are drawn at 10 m to 20 m GSD (`--virtual-gsd-factor`), "
    "normalised with the fixed reflectance scale; its baseline column is the network trained "
    'at 10 m only. Rows marked "trained with coarse crops (0.5)": the network of experiment 1 '
    "trained with half its windows drawn 2 or 3 times larger and averaged down to the patch "
    "(at 20 m or 30 m GSD; what `data.coarsen=0.5` does in the datamodules); its baseline "
    "column is the network trained at 10 m only.",
    "time_series": "Crop types (6 classes, separable only by their timing). Ours is trained on "
    "random subsets of 4 to 12 dates of a pool of dates every 8 days (day 30 to 320); the "
    "baseline, the same network, on the 8-date schedule of SpectralWorld's s2_crops. Test "
    "series are drawn at random outside a 60-day gap.",
}


def _key(row: dict[str, Any]) -> tuple[str, str, str, str]:
    return row["experiment"], row["setting"], row["metric"], row["baseline"]


def spread(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    mean = statistics.fmean(values)
    return round(mean, 4), round(statistics.stdev(values), 4) if len(values) > 1 else 0.0


def combine_runs(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One run per seed: several runs of one seed (``--only`` reruns) combined in order.

    A later run of a seed replaces the rows of an earlier one that have the same
    experiment, setting, metric and baseline, and adds its other rows; so a rerun of
    one experiment with a row added updates a full run without repeating its other
    experiments. Every draw is seeded: a rerun's STSUN rows come out within 0.0002 of the
    earlier ones (measured), the U-Net's within a few hundredths (measured: up to 0.03
    at 30 m), since its training does not repeat bit for bit.

    Raises:
        ValueError: runs of different modes.
    """
    if len({r["mode"] for r in runs}) > 1:
        raise ValueError(
            f"combine_runs: expected one mode, got {sorted({r['mode'] for r in runs})}"
        )
    by_seed: dict[int, dict[str, Any]] = {}
    for run in runs:
        seed = run["seed"]
        if seed not in by_seed:
            by_seed[seed] = {**run, "rows": list(run["rows"])}
            continue
        combined = by_seed[seed]
        index = {_key(row): i for i, row in enumerate(combined["rows"])}
        for row in run["rows"]:
            if _key(row) in index:
                combined["rows"][index[_key(row)]] = row
            else:
                combined["rows"].append(row)
        combined["experiments"] = [
            e for e in _TITLES if e in combined["experiments"] or e in run["experiments"]
        ]
        combined["command"] = f"{combined['command']}; {run['command']}"
        combined["seconds"] = {
            **combined["seconds"],
            "total": combined["seconds"]["total"] + run["seconds"]["total"],
        }
        combined["complete"] = combined.get("complete", True) and run.get("complete", True)
    return list(by_seed.values())


def merge_seeds(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One result of several seeds' runs: each row's value and baseline as mean ± std.

    A row present in only some runs is merged over those (``seeds`` says which). A goal
    is met when the mean meets it.

    Raises:
        ValueError: no runs, runs of different modes, or two runs of one seed.
    """
    if not runs:
        raise ValueError("merge_seeds: no results to merge.")
    modes = {r["mode"] for r in runs}
    seeds = [r["seed"] for r in runs]
    if len(modes) > 1 or len(set(seeds)) < len(seeds):
        raise ValueError(f"merge_seeds: expected one mode and distinct seeds, got {modes}, {seeds}")
    merged_rows: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    for run in runs:
        for row in run["rows"]:
            entry = merged_rows.setdefault(_key(row), {**row, "values": [], "baselines": []})
            entry["values"].append(row["value"])
            if row["baseline_value"] is not None:
                entry["baselines"].append(row["baseline_value"])
            entry.setdefault("seeds", []).append(run["seed"])
    rows = []
    for entry in merged_rows.values():
        entry["value"], entry["value_std"] = spread(entry["values"])
        if entry["baselines"]:
            entry["baseline_value"], entry["baseline_std"] = spread(entry["baselines"])
        if entry["met"] is not None:
            threshold = entry["goal"].removeprefix(">= ")
            reference = entry["baseline_value"] if threshold == "baseline" else float(threshold)
            entry["met"] = bool(entry["value"] >= reference)
        rows.append(entry)
    first = runs[0]
    experiments = [e for e in _TITLES if any(e in r["experiments"] for r in runs)]
    return {
        **{k: first[k] for k in ("mode", "model", "machine", "torch")},
        "seed": ", ".join(str(s) for s in seeds),
        "seeds": seeds,
        "command": "; ".join(r["command"] for r in runs)
        + "; python benchmarks/accuracy_report.py --merge ...",
        "config": first.get("config"),
        "experiments": experiments,
        "rows": rows,
        "goals": [
            {
                "goal": f"{r['experiment']}: {r['setting']} ({r['metric']} {r['goal']})",
                "value": r["value"],
                "met": r["met"],
            }
            for r in rows
            if r["met"] is not None
        ],
        "seconds": {
            "total": sum(r["seconds"]["total"] for r in runs),
            **{
                k: round(statistics.fmean(r["seconds"].get(k, 0.0) for r in runs), 1)
                for k in ("landcover", "unified", "time_series")
            },
        },
        "complete": all(r.get("complete", True) for r in runs),
        "runs": [{"seed": r["seed"], "seconds": r["seconds"]} for r in runs],
    }


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "met" if value else "not met"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def markdown(results: dict[str, Any]) -> str:
    """The results as a Markdown page: one table per experiment."""
    quick = results["mode"] == "quick"
    lines = [
        f"# Accuracy on SpectralWorld ({results['mode']})",
        "",
        f"`{results['command']}`: {results['model']} trained from scratch, seed "
        f"{results['seed']}, {results['machine']}, torch {results['torch']}, "
        f"{results['seconds']['total'] / 60:.1f} min in all. The configuration is in "
        f"`{results.get('name', 'accuracy_quick' if quick else 'accuracy')}.json` (`config`), "
        "beside every score.",
        "",
    ]
    if not results.get("complete", True):
        lines += ["**Partial: the run is still going; later experiments are missing.**", ""]
    if quick:
        lines += [
            "**Quick mode: a few dozen training steps on tiny scenes. These numbers only show "
            "that every experiment runs end to end; they say nothing about accuracy** (see "
            "`accuracy.md` for the full mode).",
            "",
        ]
    met = [g["met"] for g in results["goals"]]
    lines += [f"Goals met: {sum(met)} of {len(met)}.", ""]
    if "seeds" in results:
        lines += [
            f"Mean ± standard deviation over seeds {results['seed']} (one command per seed, "
            "merged by `accuracy_report.py --merge`); a goal is met when the mean meets it.",
            "",
        ]
    for experiment in results["experiments"]:
        rows = [r for r in results["rows"] if r["experiment"] == experiment]
        if not rows:
            continue
        if experiment in ("unified", "time_series"):
            timing = f"Wall time of this experiment: {results['seconds'].get(experiment)} s."
        else:
            timing = (
                "Wall time of the land-cover part (experiments 1, 3 and 4 together): "
                f"{results['seconds'].get('landcover')} s."
            )
        lines += [
            f"## {_TITLES[experiment]}",
            "",
            _NOTES[experiment],
            "",
            "| setting | metric | STSUN | baseline | baseline value | goal | result |",
            "|---|---|---:|---|---:|---|---|",
        ]
        for r in rows:
            if r["metric"].startswith("parameters"):  # the same for every seed
                value, baseline = f"{round(r['value']):,}", f"{round(r['baseline_value']):,}"
                lines.append(
                    f"| {r['setting']} | {r['metric']} | {value} | {r['baseline']} | "
                    f"{baseline} | {r['goal']} | |"
                )
                continue
            value, baseline = _cell(r["value"]), _cell(r["baseline_value"])
            if "value_std" in r:
                value += f" ± {r['value_std']:.3f}"
            if "baseline_std" in r:
                baseline += f" ± {r['baseline_std']:.3f}"
            lines.append(
                f"| {r['setting']} | {r['metric']} | {value} | {r['baseline']} | "
                f"{baseline} | {r['goal']} | {_cell(r['met'])} |"
            )
        lines += ["", timing, ""]
    return "\n".join(lines)


def _plot(results: dict[str, Any], path: Path) -> None:
    """One panel per experiment: STSUN against its baseline, setting by setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    experiments = [
        e for e in results["experiments"] if any(r["experiment"] == e for r in results["rows"])
    ]
    if not experiments:
        return
    figure, axes = plt.subplots(
        len(experiments), 1, figsize=(9, 2.6 * len(experiments)), squeeze=False
    )
    for axis, experiment in zip(axes[:, 0], experiments, strict=True):
        rows = [
            r
            for r in results["rows"]
            if r["experiment"] == experiment
            and r["baseline_value"] is not None
            and not r["metric"].startswith("MAE")  # metres: not on a 0-1 axis
        ]
        labels = [r["setting"][:38] for r in rows]
        x = range(len(rows))
        axis.barh([i + 0.2 for i in x], [r["value"] for r in rows], 0.4, label="STSUN")
        axis.barh([i - 0.2 for i in x], [r["baseline_value"] for r in rows], 0.4, label="baseline")
        axis.set_yticks(list(x), labels, fontsize=7)
        axis.invert_yaxis()
        axis.set_title(_TITLES[experiment], fontsize=9)
        axis.legend(fontsize=7, loc="lower right")
        if experiment in ("unseen_sensor", "resolution", "time_series"):
            axis.axvline(0.9, color="grey", linestyle=":", linewidth=1)
    figure.suptitle(f"Accuracy on SpectralWorld ({results['mode']}, seed {results['seed']})")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_pages(out_dir: Path, stem: str, results: dict[str, Any], page: str) -> None:
    """Write ``stem.json`` (``results``) and ``stem.md`` (``page``) into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{stem}.json").write_text(json.dumps(results, indent=2) + "\n")
    (out_dir / f"{stem}.md").write_text(page)


def write_report(results: dict[str, Any], out_dir: Path, name: str | None = None) -> None:
    """Write ``NAME.{json,md,png}`` into ``out_dir`` (default ``accuracy[_quick]``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    name = name or ("accuracy_quick" if results["mode"] == "quick" else "accuracy")
    results["name"] = name
    (out_dir / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    page = markdown(results)
    (out_dir / f"{name}.md").write_text(page + "\n")
    _plot(results, out_dir / f"{name}.png")
    print(page)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Merge per-seed results (``--merge``) into one report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--merge",
        nargs="+",
        type=Path,
        required=True,
        help="per-seed JSONs; a seed's later files (--only reruns) update its earlier ones",
    )
    parser.add_argument("--name", default="accuracy", help="file stem of the merged report")
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)
    runs = [json.loads(path.read_text()) for path in args.merge]
    merged = merge_seeds(combine_runs(runs))
    write_report(merged, args.out_dir, args.name)
    return merged


if __name__ == "__main__":
    main()
