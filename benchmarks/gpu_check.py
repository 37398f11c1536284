"""Train a preset in bf16 on synthetic batches and report throughput, MFU and memory.

The Python part of ``benchmarks/gpu_check.sh``::

    python benchmarks/gpu_check.py                        # stsun_base, bf16, 1 GPU
    python benchmarks/gpu_check.py --model stsun_tiny --device cpu --steps 3   # smoke run

Each step is a full training step of ``StsunTask``'s loss with AdamW (forward, float32
loss, backward, optimiser step) under ``torch.autocast(bfloat16)``, on a fixed random
batch (B, T, C, H, W given by the options) of one class task. The first
``--warmup`` steps are not timed.

Model FLOPs utilisation (MFU) is the model's FLOPs per step, counted once by
``torch.utils.flop_counter.FlopCounterMode`` over a forward and backward (matrix
products, convolutions and attention; elementwise work is not counted), times steps
per second, over the device's peak dense bf16 FLOP/s (``--peak-tflops``, or looked up
for known GPUs; unknown: MFU not reported). Peak memory is
``torch.cuda.max_memory_allocated`` (tensors, not the allocator's cache).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch
from torch.utils.flop_counter import FlopCounterMode

from stsun_lightning.batch import Batch
from stsun_lightning.data.examples import example_batch
from stsun_lightning.models import create_model, list_models
from stsun_lightning.tasks.losses import category_loss

# Peak dense bf16 tensor FLOP/s (no sparsity), from the vendors' data sheets.
PEAK_BF16_TFLOPS = {
    "H200": 989.0,
    "H100 SXM": 989.0,
    "H100 PCIe": 756.0,
    "H100": 989.0,
    "A100": 312.0,
    "L40S": 362.0,
    "A10": 125.0,
    "L4": 121.0,
}
CATEGORIES = [f"class_{i}" for i in range(8)]


def peak_tflops(device: torch.device) -> float | None:
    """The device's peak bf16 TFLOP/s if known (by the name CUDA reports)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, value in PEAK_BF16_TFLOPS.items():  # most specific names first
        if key in name:
            return value
    return None


def step_flops(model: torch.nn.Module, batch: Batch) -> int:
    """FLOPs of one forward and backward (matrix products, convolutions, attention)."""
    counter = FlopCounterMode(display=False)
    with counter, torch.autocast(batch.image.device.type, dtype=torch.bfloat16):
        loss = category_loss(model(batch).logits, batch.target)
    with counter:
        loss.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Train ``args.steps`` steps and measure them."""
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_check: CUDA is not available; use --device cpu for a smoke run.")
    torch.manual_seed(0)
    model = create_model(args.model, categories=CATEGORIES).to(device).train()
    if args.activation_checkpointing:
        model.set_activation_checkpointing(True)
    if args.compile:
        model.compile()
    batch = example_batch(
        b=args.batch_size,
        t=args.dates,
        c=args.bands,
        h=args.size,
        w=args.size,
        categories=range(len(CATEGORIES)),
    ).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    flops = step_flops(model, batch)

    def step() -> float:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = category_loss(model(batch).logits, batch.target)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    synchronize = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    for _ in range(args.warmup):
        step()
    synchronize()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    losses = [step() for _ in range(args.steps)]
    synchronize()
    seconds = time.perf_counter() - start
    if not all(map(lambda x: x == x and abs(x) != float("inf"), losses)):
        raise SystemExit(f"gpu_check: non-finite loss in bf16: {losses}")
    peak = args.peak_tflops or peak_tflops(device)
    achieved = flops * args.steps / seconds
    return {
        "model": args.model,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "precision": "bf16 autocast",
        "batch": f"B={args.batch_size}, T={args.dates}, C={args.bands}, {args.size}x{args.size}",
        "parameters": sum(p.numel() for p in model.parameters()),
        "steps": args.steps,
        "samples_per_second": args.batch_size * args.steps / seconds,
        "seconds_per_step": seconds / args.steps,
        "tflops_per_step": flops / 1e12,
        "achieved_tflops": achieved / 1e12,
        "peak_tflops": peak,
        "mfu": achieved / (peak * 1e12) if peak else None,
        "peak_memory_gib": (
            torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
        ),
        "final_loss": losses[-1],
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parse the options, run, print the report (and write it with ``--out``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="stsun_base", choices=list_models())
    parser.add_argument("--device", default="cuda", help="cuda, cuda:1, or cpu (smoke run)")
    parser.add_argument("--steps", type=int, default=50, help="timed steps")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--dates", type=int, default=1, help="T")
    parser.add_argument("--bands", type=int, default=13, help="C")
    parser.add_argument("--size", type=int, default=256, help="H = W in pixels")
    parser.add_argument("--peak-tflops", type=float, default=None, help="device peak, bf16")
    parser.add_argument("--activation-checkpointing", action="store_true")
    parser.add_argument("--compile", action="store_true", help="nn.Module.compile the network")
    parser.add_argument("--out", default=None, help="also write the report as JSON here")
    args = parser.parse_args(argv)
    report = run(args)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return report


if __name__ == "__main__":
    main()
    sys.exit(0)
