"""Benchmark: Deep LoRA vs vanilla LoRA vs PEFT LoRA on the embedded all-MiniLM-L6-v2.

One run, same process, methods interleaved step by step so that load on a shared machine hits
all of them alike. Measures, at batch 16, sequence length 128, r = 8, all-linear targets:

- training step time (forward, backward, Adam step; median over steps) and its ratio to
  vanilla LoRA (target: Deep LoRA within 1.05×);
- training memory: on CUDA the peak allocated during a step; on the CPU (no allocator
  statistics) the bytes autograd saves for backward in one step (activations, unique storages,
  frozen weights excluded) plus the adapter state (parameters, gradients, two Adam moments);
- inference time of Deep LoRA merged into the weights (``merge_and_unload``) vs the base model
  (target: within 1.02×), with the unmerged adapter for reference.

Usage: ``python benchmarks/bench_adapters.py [--steps 10] [--warmup 2] [--threads 1]``
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import peft
import torch
import transformers
from peft import get_peft_model
from torch import nn
from transformers import AutoModelForSequenceClassification

from deeplora.adapters import build_adapter_config, embedded_model_path

METHODS = {"deep-lora": "Deep LoRA (L=3)", "lora": "vanilla LoRA", "peft-lora": "PEFT LoRA"}
MIB = 2**20


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="timed steps per method")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per method first")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's; 1 is steadier on a busy CPU)")
    return parser.parse_args(argv)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def rotated(items: list[str], shift: int) -> list[str]:
    """``items`` started at position ``shift``: each round runs them in another order."""
    shift %= len(items)
    return items[shift:] + items[:shift]


def make_batch(args: argparse.Namespace, device: torch.device) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 29000, (args.batch, args.length), generator=generator)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
             "labels": torch.randn(args.batch, 1, generator=generator)}
    return {k: v.to(device) for k, v in batch.items()}


def saved_bytes(model: nn.Module, batch: dict[str, torch.Tensor]) -> int:
    """Bytes autograd saves for backward in one forward (unique storages, weights excluded)."""
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in weights:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(**batch).loss.backward()
    model.zero_grad(set_to_none=True)
    return sum(storages.values())


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    batch = make_batch(args, device)
    path = embedded_model_path()
    base = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1).to(device)

    models, optimizers = {}, {}
    for method in METHODS:
        torch.manual_seed(0)
        model = copy.deepcopy(base)
        config = build_adapter_config(method, r=args.rank, target_modules="all-linear",
                                      model=model)
        models[method] = get_peft_model(model, config).train()
        trainable = [p for p in models[method].parameters() if p.requires_grad]
        optimizers[method] = torch.optim.Adam(trainable, lr=1e-4, eps=1e-6)

    def step(method: str) -> None:
        optimizers[method].zero_grad(set_to_none=True)
        models[method](**batch).loss.backward()
        optimizers[method].step()

    times: dict[str, list[float]] = {m: [] for m in METHODS}
    peaks: dict[str, float] = {}
    for round_ in range(args.warmup + args.steps):
        for method in rotated(list(METHODS), round_):
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            elapsed = timed(lambda method=method: step(method), device)
            if round_ >= args.warmup:
                times[method].append(elapsed)
            if device.type == "cuda":
                peaks[method] = torch.cuda.max_memory_allocated(device) / MIB
    state = {m: 4 * sum(p.numel() * p.element_size() for p in models[m].parameters()
                        if p.requires_grad) / MIB for m in METHODS}
    saved = {m: saved_bytes(models[m], batch) / MIB for m in METHODS}

    # inference: merged Deep LoRA vs the base model (both plain transformers models)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    unmerged = models["deep-lora"].eval()
    merged = copy.deepcopy(unmerged).merge_and_unload().eval()
    reference = base.eval()
    inference = {"base": reference, "merged": merged, "unmerged": unmerged}
    infer_times: dict[str, list[float]] = {k: [] for k in inference}
    with torch.no_grad():
        for round_ in range(args.warmup + args.steps):
            for name in rotated(list(inference), round_):
                model = inference[name]
                elapsed = timed(lambda model=model: model(**inputs), device)
                if round_ >= args.warmup:
                    infer_times[name].append(elapsed)
        max_diff = float((merged(**inputs).logits - unmerged(**inputs).logits).abs().max())

    median = {k: statistics.median(v) for k, v in times.items()}
    infer = {k: statistics.median(v) for k, v in infer_times.items()}
    fastest = {k: min(v) for k, v in (times | infer_times).items()}
    print(f"Command: `python {shlex.join(['benchmarks/bench_adapters.py', *argv])}`\n")
    print(f"Device: {device.type} ({platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, load average "
          f"{os.getloadavg()[0]:.1f} at the end); torch {torch.__version__}, transformers "
          f"{transformers.__version__}, peft {peft.__version__}\n")
    print(f"Model: all-MiniLM-L6-v2 + regression head, batch {args.batch}, length "
          f"{args.length}, r = {args.rank}, all-linear (37 layers), Adam; median of "
          f"{args.steps} steps after {args.warmup} warm-up, methods interleaved in rotating "
          "order\n")
    memory = "peak allocated (MiB)" if device.type == "cuda" else "saved for backward (MiB)"
    print(f"| method | step time (s), median (min) | vs vanilla LoRA | vs PEFT LoRA | {memory} "
          "| adapter state (MiB) |")
    print("|---|---|---|---|---|---|")
    for method, label in METHODS.items():
        mem = peaks[method] if device.type == "cuda" else saved[method]
        print(f"| {label} | {median[method]:.3f} ({fastest[method]:.3f}) "
              f"| {median[method] / median['lora']:.3f}× "
              f"| {median[method] / median['peft-lora']:.3f}× | {mem:.1f} | "
              f"{state[method]:.2f} |")
    print("\n| inference (no grad) | time (s), median (min) | vs base |")
    print("|---|---|---|")
    for name, label in (("base", "base model"), ("merged", "Deep LoRA merged"),
                        ("unmerged", "Deep LoRA unmerged")):
        print(f"| {label} | {infer[name]:.3f} ({fastest[name]:.3f}) "
              f"| {infer[name] / infer['base']:.3f}× |")
    print(f"\nmerged vs unmerged logits: max |difference| = {max_diff:.2e}")
    print(f"Targets: Deep LoRA step ≤ 1.05× vanilla LoRA: "
          f"{'met' if median['deep-lora'] <= 1.05 * median['lora'] else 'NOT met'}; "
          f"merged inference ≤ 1.02× base: "
          f"{'met' if infer['merged'] <= 1.02 * infer['base'] else 'NOT met'}")


if __name__ == "__main__":
    main(sys.argv[1:])
