"""One ablation table: each transfer change of issue 16 off and on, on what it should move.

Run from the repository root, after the benchmarks it reads::

    python benchmarks/transfer_ablation.py --seeds 0 1 2
    python benchmarks/accuracy.py --seed N --name accuracy_seedN      # N = 0, 1, 2
    python benchmarks/accuracy_report.py --merge benchmarks/results/accuracy_seed?.json --name accuracy
    python benchmarks/finetune.py
    python benchmarks/ablation_report.py

It trains nothing: it reads ``transfer_ablation.json`` (network pieces, the thermal
modality and coarsening), ``accuracy.json`` (virtual sensors, experiments 1 and 4) and
``finetune.json`` (imprinting and the known rows), and writes ``ablation.{json,md}``
beside them. A file that is missing leaves its rows out and is named in the page.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
S2_10M = "Sentinel-2 10 m bands only (B02-B04, B08)"
TRANSFERS = (
    "Landsat-8 B1-B7",
    "Landsat-8 B1-B7 + B10-B11",
    S2_10M,
    "Sentinel-2 at 30 m",
)
NETWORK_PAIRS = (
    # change, off variant, on variant, columns it should move
    ("band encoding smooth in wavelength", "earlier", "+response", TRANSFERS),
    ("… on top of band-set kernels", "+band set", "default (+response, +band set)", TRANSFERS),
    ("band-set kernels", "earlier", "+band set", TRANSFERS),
    ("… on top of the smooth encoding", "+response", "default (+response, +band set)", TRANSFERS),
    ("bilinear decoder", "earlier", "+bilinear", ("Sentinel-2 10 m mIoU", *TRANSFERS)),
    (
        "… on top of the defaults",
        "default (+response, +band set)",
        "all",
        ("Sentinel-2 10 m mIoU", *TRANSFERS),
    ),
    (
        "coarse crops (half the crops drawn 2-3 × larger, at 2-3 × GSD)",
        "default (+response, +band set)",
        "default + coarse crops 0.5",
        ("Sentinel-2 10 m mIoU", "Sentinel-2 at 30 m", "Landsat-8 B1-B7", S2_10M),
    ),
    (
        "drawn larger (against half the batches coarsened as drawn)",
        "default + coarsened batches 0.5",
        "default + coarse crops 0.5",
        ("Sentinel-2 10 m mIoU", "Sentinel-2 at 30 m", "Landsat-8 B1-B7", S2_10M),
    ),
)


def _cell(mean: float, std: float | None) -> str:
    return f"{mean:.3f}" if not std else f"{mean:.3f} ± {std:.3f}"


def _row(change: str, experiment: str, off: tuple, on: tuple, source: str) -> dict[str, Any]:
    return {
        "change": change,
        "experiment": experiment,
        "off": off[0],
        "off_std": off[1],
        "on": on[0],
        "on_std": on[1],
        "difference": round(on[0] - off[0], 4),
        "source": source,
    }


def network_rows(ablation: dict[str, Any]) -> list[dict[str, Any]]:
    """Pieces of the network, the thermal modality and coarsening (transfer_ablation)."""
    variants = ablation["variants"]
    source = ablation.get("command", "python benchmarks/transfer_ablation.py")
    rows = []

    def value(variant: str, column: str) -> tuple[float, float | None]:
        row = variants[variant]
        return row[column], row.get(f"{column} std")

    for change, off, on, columns in NETWORK_PAIRS:
        if off not in variants or on not in variants:
            continue
        for column in columns:
            if column in variants[off] and column in variants[on]:
                rows.append(_row(change, column, value(off, column), value(on, column), source))
    default = "default (+response, +band set)"
    thermal = "Landsat-8 B1-B7 + B10-B11"
    declared = "Landsat-8 B1-B7 + B10-B11 declared optical"
    if default in variants and declared in variants[default]:
        rows.append(
            _row(
                "thermal modality (B10-B11 declared optical → thermal)",
                thermal,
                value(default, declared),
                value(default, thermal),
                source,
            )
        )
    return rows


def virtual_rows(accuracy: dict[str, Any]) -> list[dict[str, Any]]:
    """Virtual sensors off and on (accuracy.py, experiments 1 and 4; merged seeds)."""
    suffix = ", trained with virtual sensors"
    source = "python benchmarks/accuracy.py (seeds {})".format(
        ", ".join(map(str, accuracy.get("seeds", [accuracy.get("seed", 0)])))
    )
    rows = []
    for row in accuracy["rows"]:
        if not row["setting"].endswith(suffix) or row["goal"] == "reference":
            continue
        rows.append(
            _row(
                "virtual sensors (with jitter and band dropout)",
                f"{row['setting'][: -len(suffix)]} ({row['metric']})",
                (row["baseline_value"], row.get("baseline_std")),
                (row["value"], row.get("value_std")),
                source,
            )
        )
    return rows


def finetune_rows(finetune: dict[str, Any]) -> list[dict[str, Any]]:
    """Imprinting and the known rows' rate (finetune.py; one seed)."""
    by = {(r["patches"], r["method"]): r["miou"] for r in finetune["rows"]}
    source = finetune.get("command", "python benchmarks/finetune.py")
    rows = []
    for change, off in (
        ("imprinted new rows", "rows_not_imprinted"),
        ("known rows, biases and scale adapt (rate 1 × against 0)", "rows_known_frozen"),
    ):
        for count in finetune["config"]["counts"]:
            if (count, off) in by and (count, "rows") in by:
                rows.append(
                    _row(
                        change,
                        f"new classes, {count} patches (mIoU)",
                        (by[(count, off)], None),
                        (by[(count, "rows")], None),
                        source,
                    )
                )
    return rows


def markdown(rows: Sequence[dict[str, Any]], missing: Sequence[str]) -> str:
    """The table, one row per change and experiment."""
    lines = [
        "# Ablation of the transfer changes",
        "",
        "Each change off and on, on the experiments it should move; transfers are mIoU over "
        "the variant's own Sentinel-2 10 m mIoU. Mean ± std over seeds where the source ran "
        "several; the last column is the command behind the numbers. Built by "
        "`python benchmarks/ablation_report.py` from the results beside this file.",
        "",
        "| change | experiment | off | on | on − off | source |",
        "|---|---|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['change']} | {r['experiment']} | {_cell(r['off'], r['off_std'])} | "
            f"{_cell(r['on'], r['on_std'])} | {r['difference']:+.3f} | `{r['source']}` |"
        )
    if missing:
        lines += ["", "Not found, so left out: " + ", ".join(f"`{m}`" for m in missing) + "."]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Read the results, write ``ablation.{json,md}``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS, help="results folder")
    args = parser.parse_args(argv)
    rows: list[dict[str, Any]] = []
    missing: list[str] = []
    for name, build in (
        ("transfer_ablation.json", network_rows),
        ("accuracy.json", virtual_rows),
        ("finetune.json", finetune_rows),
    ):
        path = args.results / name
        if not path.exists():
            missing.append(name)
            continue
        rows += build(json.loads(path.read_text()))
    (args.results / "ablation.json").write_text(json.dumps(rows, indent=2) + "\n")
    (args.results / "ablation.md").write_text(markdown(rows, missing))
    return rows


if __name__ == "__main__":
    main()
