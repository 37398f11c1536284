"""Speed and memory of STSUN against equal-size baselines, and how its cost grows.

Run from the repository root::

    python benchmarks/model_speed.py            # full: ~6 min on 2 idle CPU cores
    python benchmarks/model_speed.py --quick    # ~2 min, fewer repetitions, no 512²
    python benchmarks/model_speed.py --profile  # also: top ops of STSUN and the ViT

Every timing is one training step without the optimiser: forward, cross-entropy
against a random target, backward. All models of a setting live in one process and
are stepped round-robin (the starting model rotates each repetition), so machine
noise hits them alike; the mean over the repetitions after warm-up is reported. A
round during which other processes used more than ``--max-other-load`` of all cores
is discarded and rerun (see :func:`time_round_robin`).

Settings (K = 6 categories, B = ``--batch-size``):

1. T = 1, C = 13, 256×256: ``stsun_small`` against the baselines of
   ``baselines.py`` (ViT + STSUN's decoder, ViT + light decoder, U-Net ResNet-18).
2. STSUN with C in (4, 13, 50) bands at T = 1.
3. STSUN with T in (1, 6, 12) dates at C = 13 (one output slot: the last date).
4. STSUN with H×W in (64², 128², 256², 512²) at T = 1, C = 13.
5. Band-set kernels: the default (each band's kernel conditioned on the whole band set)
   against kernels from each band's own metadata (``band_context=False``), C in (13, 50).

Activation memory is the total size of the distinct storages autograd saves for
backward during one forward (``torch.autograd.graph.saved_tensors_hooks``),
parameters excluded: what a forward keeps alive until backward, on any device.

Results go to ``benchmarks/results/model_speed{,_quick}.{json,md}`` and
``model_speed_growth{,_quick}.png``.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import hashlib
import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import mean, median, pstdev
from typing import Any

# Must precede torch's OpenMP start-up: spinning threads on a 2-core machine turn any
# other busy process into a 15 ms stall per op (see docs/architecture.md).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from baselines import (
    CATEGORIES,
    IN_CHANNELS,
    PRESET,
    VitLightDecoder,
    VitSameDecoder,
    make_batch,
    make_stsun,
    num_parameters,
    unet_resnet18,
)
from stsun_lightning.batch import Batch
from stsun_lightning.models import PRESETS, create_model

RESULTS_DIR = Path(__file__).resolve().parent / "results"
SEED = 0
K = len(CATEGORIES)

CHANNELS = (4, 13, 50)
DATES = (1, 6, 12)
SIZES = (64, 128, 256, 512)


@dataclass(frozen=True)
class Mode:
    """Repetitions of one run mode.

    Attributes:
        warmup: untimed steps per model before timing.
        repeats: timed steps per model, per setting name.
        sizes: image sides of setting 4.
    """

    warmup: int
    repeats: dict[str, int]
    sizes: tuple[int, ...]


FULL = Mode(
    warmup=2,
    repeats={"models": 15, "channels": 12, "dates": 8, "pixels": 10, "band_context": 8},
    sizes=SIZES,
)
QUICK = Mode(
    warmup=1,
    repeats={"models": 5, "channels": 4, "dates": 2, "pixels": 4, "band_context": 3},
    sizes=SIZES[:-1],
)


@dataclass
class Case:
    """One model on one input, timed as a training step.

    Attributes:
        name: label in the results.
        model: the network, in train mode.
        inputs: a :class:`Batch` for STSUN, a (B, C, H, W) tensor for a baseline.
        target: (N, H, W) class indices matching the flattened logits.
    """

    name: str
    model: nn.Module
    inputs: Batch | Tensor
    target: Tensor

    def logits(self) -> Tensor:
        """Forward: (N, K, H, W) logits (STSUN's (B, To, ...) flattened to N = B·To)."""
        if isinstance(self.inputs, Batch):
            logits = self.model(self.inputs).logits
            assert logits is not None
            return logits.flatten(0, 1)
        return self.model(self.inputs)

    def step(self) -> float:
        """One forward + loss + backward; returns its wall time in seconds."""
        self.model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        loss = F.cross_entropy(self.logits(), self.target)
        loss.backward()
        return time.perf_counter() - start


def stsun_case(name: str, model: nn.Module, b: int, t: int, c: int, size: int) -> Case:
    """STSUN on a batch of B items, T dates, C bands, size² pixels."""
    batch = make_batch(b, t, c, size, size, K, seed=SEED)
    assert batch.target is not None
    return Case(name, model, batch, batch.target.flatten(0, 1))


def baseline_case(name: str, model: nn.Module, batch: Batch) -> Case:
    """A fixed-input baseline on the first (only) frame of the STSUN batch."""
    assert batch.target is not None
    return Case(name, model, batch.image[:, 0], batch.target[:, 0])


def busy_cpu_seconds() -> float | None:
    """CPU seconds used by all processes since boot (``/proc/stat``), or None off Linux.

    Counts user, nice, system, irq, softirq and steal time (a hypervisor's neighbours
    show up as steal).
    """
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
    except (OSError, ValueError):
        return None
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """CPU seconds used by this process (all threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Timings:
    """Per-step measurements of a round-robin run.

    Attributes:
        records: by case name, ``seconds``, ``minor_faults``, ``system_seconds`` and
            ``cpu_seconds`` (user + system, all threads) per step, over the kept rounds,
            in round order.
        rounds: ``kept`` and ``discarded`` timed rounds, ``other_load`` of every timed
            round (share of all cores used by other processes), and ``contended``: True
            when no round was quiet and all rounds were kept.
    """

    records: dict[str, dict[str, list[float]]]
    rounds: dict[str, Any]


def time_round_robin(
    cases: Sequence[Case], warmup: int, repeats: int, max_other_load: float = 0.1
) -> Timings:
    """Time each case ``repeats`` times, interleaved, after ``warmup`` rounds.

    The starting case rotates each round. A round during which other processes used
    more than ``max_other_load`` of all cores is discarded and run again, up to
    ``repeats`` extra rounds; if no round was quiet, all are kept and flagged.

    Besides wall time, records the process's minor page faults and system CPU time
    during each step: on glibc, every tensor of 32 MiB or more is a fresh ``mmap``
    whose pages fault in on first touch, which can cost as much as the arithmetic.

    Args:
        cases: what to time.
        warmup: untimed rounds.
        repeats: timed rounds to keep.
        max_other_load: share of all cores (0-1) other processes may use in a kept round.

    Returns:
        The kept steps and what was kept.
    """
    keys = ("seconds", "minor_faults", "system_seconds", "cpu_seconds")
    timed: list[tuple[dict[str, dict[str, float]], float | None]] = []
    kept = 0
    round_index = 0
    while kept < repeats and round_index < warmup + 2 * repeats:
        offset = round_index % len(cases)
        busy_before, own_before = busy_cpu_seconds(), own_cpu_seconds()
        start = time.perf_counter()
        steps: dict[str, dict[str, float]] = {}
        for case in [*cases[offset:], *cases[:offset]]:
            before = resource.getrusage(resource.RUSAGE_SELF)
            seconds = case.step()
            after = resource.getrusage(resource.RUSAGE_SELF)
            steps[case.name] = {
                "seconds": seconds,
                "minor_faults": after.ru_minflt - before.ru_minflt,
                "system_seconds": after.ru_stime - before.ru_stime,
                "cpu_seconds": after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime,
            }
        wall = time.perf_counter() - start
        busy_after, own_after = busy_cpu_seconds(), own_cpu_seconds()
        gc.collect()
        round_index += 1
        if round_index <= warmup:
            continue
        load = None
        if busy_before is not None and busy_after is not None:
            others = busy_after - busy_before - (own_after - own_before)
            load = max(0.0, others) / (wall * (os.cpu_count() or 1))
        timed.append((steps, load))
        if load is None or load <= max_other_load:
            kept += 1
    quiet = [steps for steps, load in timed if load is None or load <= max_other_load]
    chosen = quiet or [steps for steps, _ in timed]
    records = {
        case.name: {key: [steps[case.name][key] for steps in chosen] for key in keys}
        for case in cases
    }
    rounds = {
        "kept": len(chosen),
        "discarded": len(timed) - len(quiet) if quiet else 0,
        "other_load": [load for _, load in timed],
        "max_other_load": max_other_load,
        "contended": not quiet,
    }
    return Timings(records, rounds)


def summarise(record: dict[str, list[float]]) -> dict[str, Any]:
    """Mean, median, spread and raw values of step times in milliseconds, and faults.

    ``cpu_share`` is the CPU time the process got over wall time × torch threads: near
    1 when the step had the cores to itself, well below when something else ran.
    """
    ms = [1000.0 * s for s in record["seconds"]]
    cpu_share = sum(record["cpu_seconds"]) / (sum(record["seconds"]) * torch.get_num_threads())
    return {
        "mean_ms": mean(ms),
        "median_ms": median(ms),
        "std_ms": pstdev(ms),
        "min_ms": min(ms),
        "max_ms": max(ms),
        "minor_faults_per_step": mean(record["minor_faults"]),
        "system_ms_per_step": 1000.0 * mean(record["system_seconds"]),
        "cpu_share": cpu_share,
        "times_ms": ms,
    }


def ratios(
    records: dict[str, dict[str, list[float]]], numerator: str
) -> dict[str, dict[str, float]]:
    """``numerator`` over every other case: ratio of means, and median of paired ratios.

    The paired ratio divides the times of the same round, which cancels slow drifts
    of the machine; the two estimates agreeing is a sign the run was not disturbed.
    """
    top = records[numerator]["seconds"]
    out = {}
    for name, record in records.items():
        if name == numerator:
            continue
        other = record["seconds"]
        paired = [a / b for a, b in zip(top, other, strict=True)]
        out[name] = {
            "ratio_of_means": mean(top) / mean(other),
            "median_paired_ratio": median(paired),
        }
    return out


def growth(
    records: dict[str, dict[str, list[float]]], stat: Callable[[list[float]], float] = mean
) -> dict[str, float]:
    """Time of each case over that of the first (smallest) one, by ``stat`` (mean)."""
    first = stat(next(iter(records.values()))["seconds"])
    return {name: stat(record["seconds"]) / first for name, record in records.items()}


def activation_bytes(case: Case) -> dict[str, int]:
    """Bytes of the distinct storages saved for backward by one forward.

    Parameters are excluded (they exist anyway); views of one storage count once.

    Args:
        case: model and input.

    Returns:
        ``bytes`` and ``tensors`` (number of distinct storages).
    """
    parameters = {p.untyped_storage().data_ptr() for p in case.model.parameters()}
    storages: dict[int, int] = {}

    def pack(tensor: Tensor) -> Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameters:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    case.model.zero_grad(set_to_none=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = F.cross_entropy(case.logits(), case.target)
    loss.backward()  # frees the graph
    case.model.zero_grad(set_to_none=True)
    return {"bytes": sum(storages.values()), "tensors": len(storages)}


def parameter_counts() -> dict[str, Any]:
    """Trainable parameters of the presets (K = 6) and of the baselines."""
    counts: dict[str, Any] = {}
    for name in ("stsun_tiny", "stsun_small", "stsun_base"):
        counts[name] = num_parameters(create_model(name, categories=list(CATEGORIES)))
    small = make_stsun()
    counts["stsun_small_by_module"] = {
        name: num_parameters(module) for name, module in small.named_children()
    }
    counts["vit_same_decoder"] = num_parameters(VitSameDecoder(K))
    counts["vit_light_decoder"] = num_parameters(VitLightDecoder(K))
    counts["unet_resnet18"] = num_parameters(unet_resnet18(K))
    return counts


def machine() -> dict[str, Any]:
    """Where the numbers come from."""
    cpu = platform.processor()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": "cpu",
    }


def code_version() -> dict[str, Any]:
    """Git commit, whether the model code has uncommitted edits, and a hash of that code."""
    root = Path(__file__).resolve().parent.parent
    models = sorted((root / "src" / "stsun_lightning" / "models").glob("*.py"))
    digest = hashlib.sha256(b"".join(path.read_bytes() for path in models)).hexdigest()

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    return {
        "commit": git("rev-parse", "HEAD") or None,
        "models_modified": bool(git("status", "--porcelain", "src/stsun_lightning/models")),
        "models_sha256": digest[:16],
    }


def goal(
    name: str,
    value: float,
    threshold: float,
    stretch: float | None = None,
    robust_value: float | None = None,
) -> dict[str, Any]:
    """A pass/fail record: ``value <= threshold`` (and ``<= stretch`` when given).

    ``robust_value`` is the same ratio from medians, reported beside the mean-based
    ``value`` that decides: a large gap between them means the run was disturbed.
    """
    record: dict[str, Any] = {
        "goal": name,
        "value": value,
        "robust_value": robust_value,
        "threshold": threshold,
        "passed": value <= threshold,
    }
    if stretch is not None:
        record["stretch_threshold"] = stretch
        record["stretch_passed"] = value <= stretch
    return record


def tune_malloc() -> str:
    """Make glibc keep freed memory for reuse instead of returning it to the system.

    By default every allocation of 32 MiB or more is an ``mmap`` of its own, whose
    pages fault in on first touch and are unmapped on free, so a model that makes many
    large full-resolution tensors pays kernel time per step that a caching allocator
    (as on GPU) would not. Raising the trim threshold and the heap's top pad, and
    pinning the mmap threshold at its maximum, removes most of that cost.

    Returns:
        What the allocator does, for the results.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return "default (no glibc: --tune-malloc ignored)"
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    settings = ((m_mmap_threshold, 32 * 2**20), (m_trim_threshold, 2**31 - 1), (m_top_pad, 2**30))
    if not all(mallopt(option, value) for option, value in settings):
        return "default (mallopt refused: --tune-malloc ignored)"
    return "glibc tuned: mmap threshold 32 MiB, trim threshold 2 GiB, top pad 1 GiB"


def log(message: str) -> None:
    """Progress on stderr, with a timestamp."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run(mode: Mode, batch_size: int, max_other_load: float = 0.1) -> dict[str, Any]:
    """Run every setting and return all numbers (see the module docstring).

    Args:
        mode: repetitions.
        batch_size: B of every setting.
        max_other_load: see :func:`time_round_robin`.

    Returns:
        The numbers, by setting.
    """
    torch.manual_seed(SEED)
    stsun = make_stsun().train()
    own_metadata = create_model(
        "stsun_small", categories=list(CATEGORIES), band_context=False
    ).train()
    baselines = {
        "vit_same_decoder": VitSameDecoder(K).train(),
        "vit_light_decoder": VitLightDecoder(K).train(),
        "unet_resnet18": unet_resnet18(K).train(),
    }
    b = batch_size
    results: dict[str, Any] = {"settings": {}}

    log("setting 1: STSUN vs baselines")
    main_case = stsun_case("stsun_small", stsun, b, 1, IN_CHANNELS, 256)
    assert isinstance(main_case.inputs, Batch)
    cases = [main_case] + [
        baseline_case(name, model, main_case.inputs) for name, model in baselines.items()
    ]
    timings = time_round_robin(cases, mode.warmup, mode.repeats["models"], max_other_load)
    results["settings"]["models"] = {
        "description": f"T=1, C={IN_CHANNELS}, 256x256, B={b}, K={K}",
        "rounds": timings.rounds,
        "times": {name: summarise(r) for name, r in timings.records.items()},
        "stsun_over": ratios(timings.records, "stsun_small"),
    }

    log("activation memory")
    results["activation_memory"] = {
        "method": "sum of distinct storages saved for backward during one forward "
        "(torch.autograd.graph.saved_tensors_hooks), parameters excluded",
        "setting": results["settings"]["models"]["description"],
        "models": {case.name: activation_bytes(case) for case in cases},
    }
    del cases, main_case
    gc.collect()

    variants: dict[str, tuple[str, list[Case]]] = {
        "channels": (
            f"STSUN, T=1, 256x256, B={b}, C in {CHANNELS}",
            [stsun_case(f"C={c}", stsun, b, 1, c, 256) for c in CHANNELS],
        ),
        "dates": (
            f"STSUN, C={IN_CHANNELS}, 256x256, B={b}, T in {DATES}, one output slot (last date)",
            [stsun_case(f"T={t}", stsun, b, t, IN_CHANNELS, 256) for t in DATES],
        ),
        "pixels": (
            f"STSUN, T=1, C={IN_CHANNELS}, B={b}, H=W in {mode.sizes}",
            [stsun_case(f"{s}x{s}", stsun, b, 1, IN_CHANNELS, s) for s in mode.sizes],
        ),
        "band_context": (
            f"STSUN, T=1, 256x256, B={b}, kernels from own metadata or the band set, C in (13, 50)",
            [
                stsun_case(f"C={c} {label}", model, b, 1, c, 256)
                for c in (IN_CHANNELS, 50)
                for label, model in (("own metadata", own_metadata), ("band set", stsun))
            ],
        ),
    }
    for setting, (description, setting_cases) in variants.items():
        log(f"setting {setting}: {description}")
        timings = time_round_robin(
            setting_cases, mode.warmup, mode.repeats[setting], max_other_load
        )
        results["settings"][setting] = {
            "description": description,
            "rounds": timings.rounds,
            "times": {name: summarise(r) for name, r in timings.records.items()},
            "growth": growth(timings.records),
            "growth_of_medians": growth(timings.records, median),
        }
        gc.collect()

    log("parameter counts")
    results["parameters"] = parameter_counts()
    results["goals"] = goals(results)
    return results


def goals(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Evaluate the speed and memory goals on the results of :func:`run`."""
    settings = results["settings"]
    over = settings["models"]["stsun_over"]
    channels = settings["channels"]["times"]
    dates = settings["dates"]
    memory = results["activation_memory"]["models"]
    return [
        goal(
            "setting 1: STSUN / ViT + same decoder (time)",
            over["vit_same_decoder"]["ratio_of_means"],
            1.15,
            robust_value=over["vit_same_decoder"]["median_paired_ratio"],
        ),
        goal(
            "setting 1: STSUN / ViT + light decoder (time)",
            over["vit_light_decoder"]["ratio_of_means"],
            1.5,
            robust_value=over["vit_light_decoder"]["median_paired_ratio"],
        ),
        goal(
            "setting 2: STSUN C=50 / C=13 (time)",
            channels["C=50"]["mean_ms"] / channels["C=13"]["mean_ms"],
            1.1,
            robust_value=channels["C=50"]["median_ms"] / channels["C=13"]["median_ms"],
        ),
        goal(
            "setting 3: STSUN T=6 / T=1 (time)",
            dates["growth"]["T=6"],
            4.0,
            2.0,
            robust_value=dates["growth_of_medians"]["T=6"],
        ),
        goal(
            "activation memory: STSUN / ViT + same decoder",
            memory["stsun_small"]["bytes"] / memory["vit_same_decoder"]["bytes"],
            1.2,
        ),
    ]


def _rounds_note(setting: dict[str, Any]) -> str:
    """One line on which timed rounds a setting kept."""
    rounds = setting["rounds"]
    note = f"Timed rounds kept: {rounds['kept']}; rerun for other load: {rounds['discarded']}."
    if rounds["contended"]:
        note += " **No quiet round: all kept, times are inflated by other processes.**"
    return note


def markdown(results: dict[str, Any]) -> str:
    """Short markdown tables of the results."""
    settings = results["settings"]
    info = results["machine"]
    lines = [
        "# Model speed and memory",
        "",
        f"{info['cpu']} ({info['cpu_count']} cores, {info['torch_threads']} torch threads), "
        f"torch {info['torch']}, {results['mode']} mode, allocator {results['allocator']}, "
        "train mode; one step = forward + cross-entropy + backward (no optimiser), "
        f"mean over timed steps per model (per setting: {results['repeats']}) after "
        f"{results['warmup']} warm-up rounds; page faults = minor faults per step; "
        "CPU share = process CPU time / (wall time × threads), well below 1 when "
        "something else used the cores. A round during which other processes used more "
        f"than {results['max_other_load']:.0%} of all cores is discarded and rerun.",
        "",
        f"Code: commit {str(results['code']['commit'])[:10]}, model sources sha256 "
        f"{results['code']['models_sha256']}"
        + (" (uncommitted edits)" if results["code"]["models_modified"] else "")
        + ".",
        "",
        "## Goals",
        "",
        "Goals are judged on means (setting 1: ratio of means); the median-based value "
        "(setting 1: median of same-round ratios) is given beside it as a check on noise.",
        "",
        "| goal | value | median-based | threshold | result |",
        "|---|---:|---:|---:|---|",
    ]
    for g in results["goals"]:
        verdict = "pass" if g["passed"] else "**FAIL**"
        threshold = f"{g['threshold']:.2f}"
        if "stretch_threshold" in g:
            threshold += f" (stretch {g['stretch_threshold']:.2f})"
            verdict += ", stretch " + ("pass" if g["stretch_passed"] else "fail")
        robust = "-" if g["robust_value"] is None else f"{g['robust_value']:.2f}"
        lines.append(f"| {g['goal']} | {g['value']:.2f} | {robust} | {threshold} | {verdict} |")

    models = settings["models"]
    over = models["stsun_over"]
    lines += [
        "",
        f"## Setting 1: {models['description']}",
        "",
        _rounds_note(models),
        "",
        "| model | mean ms | median ms | std ms | page faults / step | CPU share "
        "| STSUN / model (means) | (median paired) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, s in models["times"].items():
        ratio = over.get(name)
        r1 = f"{ratio['ratio_of_means']:.2f}" if ratio else "-"
        r2 = f"{ratio['median_paired_ratio']:.2f}" if ratio else "-"
        lines.append(
            f"| {name} | {s['mean_ms']:.0f} | {s['median_ms']:.0f} | {s['std_ms']:.0f} "
            f"| {s['minor_faults_per_step']:.0f} | {s['cpu_share']:.2f} | {r1} | {r2} |"
        )

    for key, title in (
        ("channels", "Setting 2"),
        ("dates", "Setting 3"),
        ("pixels", "Setting 4"),
        ("band_context", "Setting 5"),
    ):
        if key not in settings:
            continue
        setting = settings[key]
        lines += [
            "",
            f"## {title}: {setting['description']}",
            "",
            _rounds_note(setting),
            "",
            "| variant | mean ms | median ms | std ms | page faults / step | CPU share "
            "| over first (means) | (medians) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name, s in setting["times"].items():
            lines.append(
                f"| {name} | {s['mean_ms']:.0f} | {s['median_ms']:.0f} | {s['std_ms']:.0f} "
                f"| {s['minor_faults_per_step']:.0f} | {s['cpu_share']:.2f} "
                f"| {setting['growth'][name]:.2f} | {setting['growth_of_medians'][name]:.2f} |"
            )

    memory = results["activation_memory"]
    reference = memory["models"]["vit_same_decoder"]["bytes"]
    lines += [
        "",
        f"## Activation memory: {memory['setting']}",
        "",
        f"Method: {memory['method']}.",
        "",
        "| model | MiB | saved storages | over vit_same_decoder |",
        "|---|---:|---:|---:|",
    ]
    for name, m in memory["models"].items():
        lines.append(
            f"| {name} | {m['bytes'] / 2**20:.1f} | {m['tensors']} | {m['bytes'] / reference:.2f} |"
        )

    params = results["parameters"]
    lines += ["", "## Parameters (K = 6)", "", "| model | parameters |", "|---|---:|"]
    for name, count in params.items():
        if isinstance(count, int):
            lines.append(f"| {name} | {count / 1e6:.2f} M |")
    lines += [
        "",
        "stsun_small by module: "
        + ", ".join(
            f"{name} {count / 1e6:.2f} M"
            for name, count in params["stsun_small_by_module"].items()
            if count
        )
        + ".",
        "",
    ]
    return "\n".join(lines)


def plot_growth(results: dict[str, Any], path: Path) -> None:
    """Three panels: STSUN step time against C, T and pixels, over the smallest."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = results["settings"]
    sizes = results["pixel_sizes"]
    panels: list[tuple[str, str, list[float], list[str], bool]] = [
        ("channels", "bands C", [float(c) for c in CHANNELS], [str(c) for c in CHANNELS], False),
        ("dates", "dates T", [float(t) for t in DATES], [str(t) for t in DATES], True),
        ("pixels", "pixels H×W", [float(s * s) for s in sizes], [f"{s}²" for s in sizes], True),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.3))
    for ax, (key, label, xs, ticks, proportional) in zip(axes, panels, strict=True):
        ax.plot(xs, list(settings[key]["growth"].values()), "o-", label="STSUN (means)")
        ax.plot(
            xs, list(settings[key]["growth_of_medians"].values()), "x:", label="STSUN (medians)"
        )
        if proportional:
            ax.plot(xs, [x / xs[0] for x in xs], "--", color="grey", label="proportional")
            ax.set_xscale("log")
            ax.set_yscale("log")
        else:
            ax.axhline(1.0, ls="--", color="grey", label="flat")
        ax.set_xticks(xs, ticks)
        ax.minorticks_off()
        ax.set_xlabel(label)
        ax.set_ylabel("step time / smallest")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(
        f"stsun_small forward + backward, B={results['batch_size']}, CPU "
        f"({results['machine']['torch_threads']} threads)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def profile(batch_size: int, steps: int = 3, rows: int = 25) -> str:
    """Top ops by self CPU time of STSUN and the ViT with the same decoder (setting 1).

    Args:
        batch_size: B.
        steps: profiled steps per model, after one warm-up step.
        rows: ops listed per model.

    Returns:
        The two tables, as text.
    """
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    torch.manual_seed(SEED)
    stsun = stsun_case("stsun_small", make_stsun().train(), batch_size, 1, IN_CHANNELS, 256)
    assert isinstance(stsun.inputs, Batch)
    vit = baseline_case("vit_same_decoder", VitSameDecoder(K).train(), stsun.inputs)
    sections = []
    for case in (stsun, vit):
        case.step()
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            total = sum(case.step() for _ in range(steps))
        table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)
        sections.append(
            f"== {case.name}: {steps} steps, {1000 * total / steps:.0f} ms/step under the "
            f"profiler ==\n{table}"
        )
    return "\n\n".join(sections)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parse arguments, run the benchmark, write the results.

    Args:
        argv: command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        All numbers, as written to the JSON file.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="fewer repetitions and no 512² (~2 min)"
    )
    parser.add_argument("--batch-size", type=int, default=2, help="B of every setting")
    parser.add_argument(
        "--repeats", type=int, default=None, help="timed steps per model in every setting"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also write the top ops of STSUN and the ViT (setting 1) by self CPU time",
    )
    parser.add_argument(
        "--tune-malloc",
        action="store_true",
        help="keep freed memory in glibc's heap (fewer page faults; see tune_malloc)",
    )
    parser.add_argument(
        "--max-other-load",
        type=float,
        default=0.1,
        help="rerun a round if other processes used more than this share of all cores "
        "(1 keeps every round)",
    )
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR, help="results folder")
    args = parser.parse_args(argv)

    mode = QUICK if args.quick else FULL
    if args.repeats is not None:
        mode = Mode(mode.warmup, dict.fromkeys(mode.repeats, args.repeats), mode.sizes)
    allocator = tune_malloc() if args.tune_malloc else "default"
    suffix = ("_quick" if args.quick else "") + ("_tuned_malloc" if args.tune_malloc else "")
    args.out_dir.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    results: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "batch_size": args.batch_size,
        "num_classes": K,
        "preset": {"name": "stsun_small", **PRESETS["stsun_small"]},
        "baseline_sizes": {k: PRESET[k] for k in ("dim", "depth", "num_heads", "patch_size")},
        "warmup": mode.warmup,
        "repeats": mode.repeats,
        "pixel_sizes": list(mode.sizes),
        "seed": SEED,
        "max_other_load": args.max_other_load,
        "machine": machine(),
        "code": code_version(),
        "allocator": allocator,
    }
    results.update(run(mode, args.batch_size, args.max_other_load))
    results["wall_time_s"] = time.perf_counter() - started

    json_path = args.out_dir / f"model_speed{suffix}.json"
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    md_path = args.out_dir / f"model_speed{suffix}.md"
    md_path.write_text(markdown(results))
    png_path = args.out_dir / f"model_speed_growth{suffix}.png"
    plot_growth(results, png_path)
    log(f"wrote {json_path}, {md_path}, {png_path} in {results['wall_time_s']:.0f} s")

    if args.profile:
        log("profiling setting 1")
        profile_path = args.out_dir / f"model_speed_profile{suffix}.txt"
        profile_path.write_text(profile(args.batch_size) + "\n")
        log(f"wrote {profile_path}")
    print(md_path.read_text())
    return results


if __name__ == "__main__":
    main()
