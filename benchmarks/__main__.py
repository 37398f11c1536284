"""Run every benchmark of the project, then assemble ``benchmarks/results/README.md``.

Run from the repository root::

    python -m benchmarks            # full mode (hours on 2 cores; see benchmarks/README.md)
    python -m benchmarks --quick    # CI mode: every script with --quick
    python -m benchmarks --only accuracy model_speed
    python -m benchmarks --readme-only   # rebuild the README from the results on disk

Each benchmark script runs as its own process, one after the other (so timings never
overlap), with ``OMP_WAIT_POLICY=PASSIVE``. Every script runs even when one fails; the
command exits with status 1 if any failed. The README then gathers every ``*.md`` page
of the results folder, each with the command that reproduces it and a count of the
goals it met (from its JSON's ``goals``, else from its tables' goal/result column).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["BENCHMARKS", "Benchmark", "assemble_readme", "goal_summary", "main"]

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


@dataclass(frozen=True)
class Benchmark:
    """One benchmark script and the stem of the results it writes.

    Attributes:
        name: short name (``--only``).
        script: file name under ``benchmarks/``.
        stem: results stem: ``<stem>.md`` in full mode, ``<stem>_quick.md`` with ``--quick``.
    """

    name: str
    script: str
    stem: str

    def command(self, quick: bool) -> list[str]:
        """The command line, relative to the repository root."""
        return ["python", f"benchmarks/{self.script}", *(["--quick"] if quick else [])]


BENCHMARKS: tuple[Benchmark, ...] = (
    Benchmark("model_speed", "model_speed.py", "model_speed"),
    Benchmark("loader_speed", "loader_speed.py", "loader_speed"),
    Benchmark("crop_sampling", "crop_sampling.py", "crop_sampling"),
    Benchmark("predict_memory", "predict_memory.py", "predict_memory"),
    Benchmark("agreement", "agreement.py", "agreement"),
    Benchmark("predict_writer", "predict_writer.py", "predict_writer"),
    Benchmark("export_speed", "export_speed.py", "export_speed"),
    Benchmark("scale_options", "scale_options.py", "scale_options"),
    Benchmark("world_separability", "world_separability.py", "world_separability"),
    Benchmark("accuracy", "accuracy.py", "accuracy"),
    Benchmark("finetune", "finetune.py", "finetune"),
    Benchmark("transfer_ablation", "transfer_ablation.py", "transfer_ablation"),
    Benchmark("joint_ablation", "joint_ablation.py", "joint_ablation"),
    Benchmark("band_probe", "band_probe.py", "band_probe"),
)
"""Every benchmark, in the order they run."""

_OTHER_COMMANDS = {"demo": "make demo"}
_PASS = {"met", "pass", "passed", "yes", "true"}
_FAIL = {"not met", "fail", "failed", "no", "false"}


def reproduce_command(stem: str, results_dir: Path = RESULTS) -> str:
    """The command that writes the page ``<stem>.md``, as far as it is known."""
    for benchmark in BENCHMARKS:
        for quick in (False, True):
            if stem == benchmark.stem + ("_quick" if quick else ""):
                return " ".join(benchmark.command(quick))
    if stem in _OTHER_COMMANDS:
        return _OTHER_COMMANDS[stem]
    data = _load_json(results_dir / f"{stem}.json")
    if isinstance(data, dict) and isinstance(data.get("config"), str):
        extra = " ".join(str(a) for a in data.get("extra_arguments", []))
        return f"python -m stsun_lightning.demo --config {data['config']} {extra}".strip()
    return "see the page"


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _goals_from_json(data: Any) -> list[tuple[str, bool]] | None:
    """(label, met) of each goal of a results JSON with a ``goals`` list, else None."""
    if not isinstance(data, dict) or not isinstance(data.get("goals"), list):
        return None
    goals = []
    for goal in data["goals"]:
        if not isinstance(goal, dict):
            continue
        met = goal.get("met", goal.get("passed"))
        if isinstance(met, bool):
            label = " ".join(
                str(goal[k]) for k in ("source", "metric", "goal") if goal.get(k) is not None
            )
            goals.append((label, met))
    return goals


def _goals_from_markdown(text: str) -> list[tuple[str, bool]]:
    """(label, met) of each row of tables with a ``goal`` or ``result`` column of verdicts.

    Verdicts are met / not met or pass / fail; the ``result`` column wins when a table
    has both. A row's label is its first cells (up to three) before that column.
    """
    goals: list[tuple[str, bool]] = []
    header: list[str] | None = None
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if "|" in line else None
        if cells is None:
            header = None
        elif header is None:
            header = [c.lower() for c in cells]
        elif not set(line.strip()) <= set("|-: "):
            columns = [i for i, c in enumerate(header) if c in ("result", "goal")]
            for i in sorted(columns, key=lambda i: header[i] != "result"):
                value = cells[i].lower() if i < len(cells) else ""
                first = value.split(",")[0].strip()
                if first in _PASS or first in _FAIL:
                    goals.append((", ".join(cells[: min(i, 3)]), first in _PASS))
                    break
    return goals


def goal_summary(stem: str, results_dir: Path = RESULTS) -> str:
    """One line on the goals of the page ``<stem>.md``: how many were met, which were not."""
    goals = _goals_from_json(_load_json(results_dir / f"{stem}.json"))
    if not goals:
        page = results_dir / f"{stem}.md"
        goals = _goals_from_markdown(page.read_text(encoding="utf-8")) if page.exists() else []
    if not goals:
        return "no pass/fail goal recorded (measurements only)"
    missed = [label for label, met in goals if not met]
    line = f"{len(goals) - len(missed)} of {len(goals)} goals met"
    if missed:
        line += "; not met: " + "; ".join(missed)
    return line


def _demote(text: str) -> str:
    """Headings two levels down, so that each page sits under its own ``##`` section."""
    return re.sub(r"^(#{1,4}) ", r"##\1 ", text, flags=re.MULTILINE)


def assemble_readme(
    results_dir: Path = RESULTS, runs: Sequence[dict[str, Any]] | None = None
) -> str:
    """Write ``results_dir/README.md`` gathering every results page; returns its text.

    Args:
        results_dir: the results folder.
        runs: what this run did (``name``, ``command``, ``returncode``, ``seconds``), to
            list at the top; None when only the README is rebuilt.
    """
    known = [b.stem + suffix for b in BENCHMARKS for suffix in ("", "_quick")]
    pages = sorted(p.stem for p in results_dir.glob("*.md") if p.name != "README.md")
    order = [s for s in known if s in pages] + [s for s in pages if s not in known]
    lines = [
        "# Benchmark results",
        "",
        "Written by `python -m benchmarks` (`make bench`; `make bench-quick` for the quick "
        "mode CI runs). Each section below is one page of this folder, with the command "
        "that reproduces it and its goals. Pages named `*_quick` come from the quick "
        "mode: few steps and small inputs, so they show that a benchmark runs, not what "
        "it measures.",
        "",
    ]
    if runs:
        lines += [
            "## This run",
            "",
            "| benchmark | command | status | seconds |",
            "|---|---|---|---:|",
        ]
        for run in runs:
            status = "ok" if run["returncode"] == 0 else f"failed ({run['returncode']})"
            lines.append(
                f"| {run['name']} | `{run['command']}` | {status} | {run['seconds']:.0f} |"
            )
        lines.append("")
    lines += ["## Contents", "", "| page | reproduce | goals |", "|---|---|---|"]
    for stem in order:
        lines.append(
            f"| [{stem}.md]({stem}.md) | `{reproduce_command(stem, results_dir)}` | "
            f"{goal_summary(stem, results_dir)} |"
        )
    lines.append("")
    for stem in order:
        text = (results_dir / f"{stem}.md").read_text(encoding="utf-8").strip()
        lines += [
            f"## {stem}",
            "",
            f"Reproduce: `{reproduce_command(stem, results_dir)}`. "
            f"Goals: {goal_summary(stem, results_dir)}.",
            "",
            _demote(text),
            "",
        ]
    readme = "\n".join(lines)
    (results_dir / "README.md").write_text(readme, encoding="utf-8")
    return readme


def run_benchmark(benchmark: Benchmark, quick: bool, root: Path) -> dict[str, Any]:
    """Run one script in a fresh process from the repository root."""
    command = benchmark.command(quick)
    env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    print(f"== {benchmark.name}: {' '.join(command)}", flush=True)
    start = time.perf_counter()
    completed = subprocess.run([sys.executable, *command[1:]], cwd=root, env=env, check=False)
    seconds = time.perf_counter() - start
    print(f"== {benchmark.name}: exit {completed.returncode} in {seconds:.0f} s", flush=True)
    return {
        "name": benchmark.name,
        "command": " ".join(command),
        "returncode": completed.returncode,
        "seconds": seconds,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmarks and write the README; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="every script with --quick (CI)")
    parser.add_argument(
        "--only", nargs="*", choices=[b.name for b in BENCHMARKS], help="run only these"
    )
    parser.add_argument("--readme-only", action="store_true", help="only rebuild results/README.md")
    args = parser.parse_args(argv)
    runs = []
    if not args.readme_only:
        chosen = [b for b in BENCHMARKS if not args.only or b.name in args.only]
        runs = [run_benchmark(b, args.quick, HERE.parent) for b in chosen]
    assemble_readme(RESULTS, runs or None)
    print(f"Wrote {RESULTS / 'README.md'}")
    failed = [r["name"] for r in runs if r["returncode"] != 0]
    if failed:
        print(f"Failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
