"""What the scale-out options cost: unused parameters, checkpointing, compile, bf16.

Measured on the CPU: DDP's unused parameters, activation checkpointing of the trunk,
``torch.compile`` of the network, and bf16 autocast.

Run from the repository root::

    python benchmarks/scale_options.py            # ~4 min on 2 CPU cores
    python benchmarks/scale_options.py --quick    # ~2 min, fewer steps

1. **DDP and unused parameters** (two processes, gloo, one thread each,
   ``stsun_tiny``): every rank alternates class and value batches of one and of three
   dates, the ranks out of phase, so which parameters a step leaves unused changes from
   step to step. Three ways, each on its own copy of the same network: plain DDP
   (``find_unused_parameters=False``, nothing else: does it fail?), DDP with
   ``find_unused_parameters=True``, and plain DDP with the task's zero-weighted term
   through every parameter (what ``StsunTask`` adds under DDP). The last two are timed
   in alternating rounds in the same processes; the ratio is reported.
2. **Activation checkpointing** of the trunk blocks (``stsun_small``): activation
   memory (the distinct storages autograd saves during one forward,
   ``torch.autograd.graph.saved_tensors_hooks``, parameters excluded) and the time of a
   forward + backward, on and off, in alternating rounds.
3. **torch.compile** (``nn.Module.compile``, default inductor backend, ``stsun_tiny``):
   time of the first step (compilation), graph breaks, and the steady-state time of a
   step against eager mode.
4. **bf16**: logits of ``stsun_small`` under ``torch.autocast(bfloat16)`` against
   float32, with the heads' float32 island and with the head in bfloat16; the error of
   ``scaled_dot_product_attention`` in bfloat16 against a float64 reference and against
   a softmax computed in bfloat16; the time of a step in bf16 against float32.

Speeds are ratios against a baseline run in the same process, never absolute claims;
the machine is shared, so expect a few percent of noise. Results go to
``benchmarks/results/scale_options.{json,md}``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from statistics import median
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import Tensor, nn

from stsun_lightning.batch import Batch
from stsun_lightning.data.examples import example_batch
from stsun_lightning.models import create_model
from stsun_lightning.models.stsun import Stsun
from stsun_lightning.tasks.losses import category_loss, value_loss

RESULTS_DIR = Path(__file__).resolve().parent / "results"
CATEGORIES = [f"class_{i}" for i in range(6)]
VARIABLES = ["height"]


def network(preset: str, seed: int = 0) -> Stsun:
    """A preset with six categories and one variable, seeded."""
    torch.manual_seed(seed)
    return create_model(preset, categories=CATEGORIES, variables=VARIABLES)


def batch_of(kind: str, dates: int, size: int, b: int = 2, c: int = 10, seed: int = 0) -> Batch:
    """A class (six categories) or value batch of ``dates`` dates, ``size`` pixels square."""
    if kind == "class":
        return example_batch(b=b, t=dates, c=c, h=size, w=size, categories=range(6), seed=seed)
    return example_batch(
        b=b, t=dates, c=c, h=size, w=size, categories=None, variables=[0], seed=seed
    )


def loss_of(model: nn.Module, batch: Batch) -> Tensor:
    """The task's loss of one batch (float32, as in ``StsunTask``)."""
    output = model(batch)
    if output.logits is not None:
        return category_loss(output.logits, batch.target)
    return value_loss(output.values, batch.target)


def zero_through(model: nn.Module) -> Tensor:
    """0 with a gradient for every parameter (``StsunTask`` under DDP)."""
    return sum(p.sum() for p in model.parameters() if p.requires_grad) * 0.0


def timed(step: Callable[[], Any]) -> float:
    """Seconds of one call."""
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def alternate(steps: dict[str, Callable[[], Any]], rounds: int, per_round: int) -> dict:
    """Median seconds per step of each way, run in alternating rounds (order rotating)."""
    names = list(steps)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            times[name] += [timed(steps[name]) for _ in range(per_round)]
    return {n: median(t) for n, t in times.items()}


def saved_bytes(run: Callable[[], Tensor], parameters: Sequence[Tensor]) -> int:
    """Bytes of the distinct storages autograd saves while ``run`` builds its graph."""
    own = {p.untyped_storage().data_ptr() for p in parameters}
    storages: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in own:
            storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = run()
    loss.backward()
    return sum(storages.values())


# 1. DDP -------------------------------------------------------------------------------


def _ddp_worker(rank: int, world: int, port: int, steps: int, rounds: int, out: str) -> None:
    """One DDP rank: the three ways of handling unused parameters."""
    from torch.nn.parallel import DistributedDataParallel

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    kinds = [("class", 1), ("value", 3), ("value", 1), ("class", 3)]
    batches = [batch_of(k, t, 32, seed=i) for i, (k, t) in enumerate(kinds)]
    base = network("stsun_tiny")
    unused = {}
    for i, batch in enumerate(batches):
        probe = copy.deepcopy(base)
        loss_of(probe, batch).backward()
        unused[f"{kinds[i][0]}, T={kinds[i][1]}"] = sum(
            p.numel() for p in probe.parameters() if p.grad is None
        )

    def way(find_unused: bool, touch: bool) -> Callable[[], None]:
        model = DistributedDataParallel(copy.deepcopy(base), find_unused_parameters=find_unused)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        counter = iter(range(10**9))

        def step() -> None:
            i = next(counter)
            batch = batches[(i + rank) % len(batches)]  # ranks out of phase
            loss = loss_of(model, batch)
            if touch:
                loss = loss + zero_through(model)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        return step

    ways = {"find_unused_parameters=True": way(True, False), "zero term": way(False, True)}
    for step in ways.values():  # warm-up
        step()
        step()
    medians = alternate(ways, rounds, steps)
    plain = way(False, False)
    failure = None
    try:
        for _ in range(3):
            plain()
    except RuntimeError as error:
        failure = str(error).strip().splitlines()[0]
    if rank == 0:
        Path(out).write_text(
            json.dumps({"seconds_per_step": medians, "plain_ddp_error": failure, "unused": unused})
        )
    dist.barrier()
    dist.destroy_process_group()


def ddp_unused(steps: int, rounds: int, tmp: Path) -> dict[str, Any]:
    """Run :func:`_ddp_worker` on two processes and summarise."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp / "ddp.json"
    mp.spawn(_ddp_worker, args=(2, port, steps, rounds, str(out)), nprocs=2, join=True)
    result = json.loads(out.read_text())
    seconds = result["seconds_per_step"]
    result["find_unused_over_zero_term"] = (
        seconds["find_unused_parameters=True"] / seconds["zero term"]
    )
    result["parameters"] = sum(p.numel() for p in network("stsun_tiny").parameters())
    return result


# 2. Activation checkpointing ------------------------------------------------------------


def checkpointing(preset: str, size: int, dates: int, rounds: int, steps: int) -> dict[str, Any]:
    """Activation memory and step time with and without checkpointing the trunk blocks."""
    batch = batch_of("class", dates, size)
    model = network(preset).train()
    memory = {}
    for enabled in (False, True):
        model.set_activation_checkpointing(enabled)
        memory[enabled] = saved_bytes(lambda: loss_of(model, batch), list(model.parameters()))
        model.zero_grad(set_to_none=True)

    def step(enabled: bool) -> Callable[[], None]:
        def run() -> None:
            model.set_activation_checkpointing(enabled)
            loss_of(model, batch).backward()
            model.zero_grad(set_to_none=True)

        return run

    medians = alternate({"off": step(False), "on": step(True)}, rounds, steps)
    model.set_activation_checkpointing(False)
    return {
        "preset": preset,
        "batch": f"B=2, T={dates}, C=10, {size}x{size}",
        "activation_mib": {"off": memory[False] / 2**20, "on": memory[True] / 2**20},
        "memory_on_over_off": memory[True] / memory[False],
        "seconds_per_step": medians,
        "time_on_over_off": medians["on"] / medians["off"],
    }


# 3. torch.compile -----------------------------------------------------------------------


def compiled(size: int, rounds: int, steps: int) -> dict[str, Any]:
    """Compilation time, graph breaks and steady-state speed of ``nn.Module.compile``."""
    import torch._dynamo

    batch = batch_of("class", 1, size)
    eager = network("stsun_tiny").train()
    fast = copy.deepcopy(eager)
    fast.compile()

    def step(model: nn.Module) -> Callable[[], None]:
        def run() -> None:
            loss_of(model, batch).backward()
            model.zero_grad(set_to_none=True)

        return run

    first = timed(step(fast))
    explanation = torch._dynamo.explain(copy.deepcopy(eager))(batch)
    medians = alternate({"eager": step(eager), "compiled": step(fast)}, rounds, steps)
    return {
        "preset": "stsun_tiny",
        "batch": f"B=2, T=1, C=10, {size}x{size}",
        "first_step_seconds": first,
        "graphs": explanation.graph_count,
        "graph_breaks": explanation.graph_break_count,
        "break_reasons": sorted({str(b.reason).splitlines()[0] for b in explanation.break_reasons})[
            :5
        ],
        "seconds_per_step": medians,
        "compiled_over_eager": medians["compiled"] / medians["eager"],
    }


# 4. bf16 --------------------------------------------------------------------------------


def bf16(size: int, rounds: int, steps: int) -> dict[str, Any]:
    """Logit errors under bf16 autocast, with and without the heads' float32 island."""
    batch = batch_of("class", 1, size)
    model = network("stsun_small").eval()
    with torch.no_grad():
        reference = model(batch).logits
        features: dict[str, Tensor] = {}
        hook = model.decoder.register_forward_hook(lambda m, i, o: features.update(x=o))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = model(batch).logits
            head = model.category_head
            rows = model.category_embedding(batch.categories)
            # The same head computed in bfloat16 throughout (what the island avoids).
            x = features["x"].to(torch.bfloat16)
            e = F.normalize(head.proj(rows[..., :-1].to(torch.bfloat16)), dim=-1)
            dots = torch.einsum("bodhw,bkd->bokhw", x, e.to(torch.bfloat16))
            norm = torch.linalg.vector_norm(x, dim=2, keepdim=True).clamp(min=1e-6)
            bias = rows[..., -1][:, None, :, None, None]
            in_bf16 = (dots * (head.log_scale.exp() / norm) + bias).float()
        hook.remove()
        island = model.category_head(features["x"], rows, batch.category_mask)
    requested = reference > -1e3
    target = batch.target

    def report(logits: Tensor) -> dict[str, float]:
        return {
            "max_abs_logit_error": float((logits - reference)[requested].abs().max()),
            "loss_error": float(category_loss(logits, target) - category_loss(reference, target)),
        }

    # Attention: bf16 SDPA against float64, and a softmax computed in bfloat16.
    torch.manual_seed(0)
    q, k, v = (torch.randn(4, 4, 1024, 32) for _ in range(3))
    q16, k16, v16 = (t.to(torch.bfloat16) for t in (q, k, v))
    exact = F.scaled_dot_product_attention(q16.double(), k16.double(), v16.double())
    sdpa = F.scaled_dot_product_attention(q16, k16, v16).double()
    scores = (q16 @ k16.transpose(-1, -2)) * 32**-0.5
    manual = (scores.softmax(-1) @ v16).double()  # softmax in bfloat16
    train_model = network("stsun_small").train()

    def step(dtype: torch.dtype | None) -> Callable[[], None]:
        def run() -> None:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype is not None):
                loss = loss_of(train_model, batch)
            loss.backward()
            train_model.zero_grad(set_to_none=True)

        return run

    medians = alternate({"float32": step(None), "bf16-mixed": step(torch.bfloat16)}, rounds, steps)
    return {
        "preset": "stsun_small",
        "batch": f"B=2, T=1, C=10, {size}x{size}, 6 categories",
        "logit_scale": float(model.category_head.log_scale.detach().exp()),
        "heads_float32": report(mixed),
        "head_in_bfloat16": report(in_bf16),
        "island_matches_model": float((island - mixed).abs().max()),
        "sdpa_bf16_max_error": float((sdpa - exact).abs().max()),
        "softmax_in_bf16_max_error": float((manual - exact).abs().max()),
        "bf16_ulp_at_output": float(exact.abs().max() * 2**-8),
        "seconds_per_step": medians,
        "bf16_over_float32": medians["bf16-mixed"] / medians["float32"],
    }


def markdown(results: dict[str, Any]) -> str:
    """The results as a Markdown page."""
    d, a, c, b = results["ddp"], results["checkpointing"], results["compile"], results["bf16"]
    lines = [
        "# Scale-out options, measured on the CPU",
        "",
        f"`python benchmarks/scale_options.py{' --quick' if results['quick'] else ''}` on "
        f"{results['machine']}, torch {results['torch']}. Speeds are ratios of medians of "
        "alternating rounds in one process (noise: a few percent).",
        "",
        "## DDP: parameters a batch leaves unused",
        "",
        "Parameters without a gradient after one batch ("
        + ", ".join(f"{k}: {v}" for k, v in d["unused"].items())
        + f" of {d['parameters']}).",
        "",
        f"- plain DDP, nothing else: `{d['plain_ddp_error']}`",
        "- `find_unused_parameters=True`: "
        f"{d['seconds_per_step']['find_unused_parameters=True'] * 1e3:.1f} ms/step",
        f"- zero term through every parameter: {d['seconds_per_step']['zero term'] * 1e3:.1f} "
        "ms/step",
        f"- find_unused / zero term: **{d['find_unused_over_zero_term']:.3f}**",
        "",
        "## Activation checkpointing of the trunk blocks",
        "",
        f"{a['preset']}, {a['batch']}: activation memory "
        f"{a['activation_mib']['off']:.1f} MiB off, {a['activation_mib']['on']:.1f} MiB on "
        f"(**{a['memory_on_over_off']:.2f}x**); step time on/off **{a['time_on_over_off']:.2f}x**.",
        "",
        "## torch.compile",
        "",
        f"{c['preset']}, {c['batch']}: first step {c['first_step_seconds']:.1f} s "
        f"(compilation), {c['graphs']} graphs, {c['graph_breaks']} graph breaks; "
        f"steady state compiled/eager **{c['compiled_over_eager']:.2f}x**.",
        "",
        "Graph breaks (first reasons): " + "; ".join(f"`{r}`" for r in c["break_reasons"]),
        "",
        "## bf16",
        "",
        f"{b['preset']}, {b['batch']}, logit scale {b['logit_scale']:.1f}:",
        "",
        "| head | max abs logit error | loss error |",
        "|---|---|---|",
        f"| float32 island (as built) | {b['heads_float32']['max_abs_logit_error']:.4f} | "
        f"{b['heads_float32']['loss_error']:+.2e} |",
        f"| in bfloat16 | {b['head_in_bfloat16']['max_abs_logit_error']:.4f} | "
        f"{b['head_in_bfloat16']['loss_error']:+.2e} |",
        "",
        f"Attention (L=1024, bf16 inputs): SDPA max error {b['sdpa_bf16_max_error']:.2e}, a "
        f"softmax in bfloat16 {b['softmax_in_bf16_max_error']:.2e} (one bf16 ulp at the "
        f"output: {b['bf16_ulp_at_output']:.2e}): SDPA already accumulates in float32.",
        "",
        f"Step time bf16-mixed / float32 on this CPU: **{b['bf16_over_float32']:.2f}x**.",
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run every measurement and write the results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and rounds")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR, help="results folder")
    args = parser.parse_args(argv)
    rounds, steps = (3, 2) if args.quick else (6, 3)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "quick": args.quick,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "torch": torch.__version__,
    }
    print("DDP unused parameters...", flush=True)
    results["ddp"] = ddp_unused(steps * 2, rounds, args.out_dir)
    (args.out_dir / "ddp.json").unlink(missing_ok=True)
    print("activation checkpointing...", flush=True)
    results["checkpointing"] = checkpointing(
        "stsun_small", 64 if args.quick else 128, 3, rounds, steps
    )
    print("torch.compile...", flush=True)
    results["compile"] = compiled(64, rounds, steps)
    print("bf16...", flush=True)
    results["bf16"] = bf16(64 if args.quick else 128, rounds, steps)
    name = "scale_options_quick" if args.quick else "scale_options"
    (args.out_dir / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out_dir / f"{name}.md").write_text(markdown(results))
    print(markdown(results))
    return results


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
