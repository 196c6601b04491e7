"""Benchmark: training memory of Deep LoRA with and without gradient checkpointing.

On the embedded all-MiniLM-L6-v2 (+ regression head), batch 16, length 128, Deep LoRA r = 8,
L = 3 on the paper's all-dense targets, one training step (forward, backward, Adam). Each
setting runs in a fresh process, so that peaks do not mix:

- saved for backward: bytes autograd keeps between forward and backward (unique storages,
  frozen weights excluded), measured with ``torch.autograd.graph.saved_tensors_hooks``;
- peak RSS: the process's maximum resident memory during the step minus the one after loading
  and wrapping the model (``resource.getrusage``; CPU only, includes allocator slack);
- step time (median of ``--steps``).

Checkpointing is ``base.gradient_checkpointing_enable()`` before ``get_peft_model`` (PEFT then
calls ``enable_input_require_grads``), reentrant and non-reentrant. With ``--compile`` it also
checks that a ``torch.compile`` (inductor) Deep LoRA model gives eager's loss and gradients on a
small batch, and times the compilation.

Usage: ``python benchmarks/bench_training_memory.py [--steps 3] [--threads 2] [--compile]``
(``--compile-only``: just the compile check).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from bench_adapters import saved_bytes  # benchmarks/ is on sys.path when run as a script
from peft import get_peft_model
from transformers import AutoModelForSequenceClassification

from deeplora.adapters import DeepLoraConfig, embedded_model_path

SETTINGS = {"none": None, "reentrant": True, "non-reentrant": False}
MIB = 2**20


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="timed steps per setting")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="also check torch.compile")
    parser.add_argument("--one", choices=sorted(SETTINGS), help=argparse.SUPPRESS)
    parser.add_argument("--compile-only", action="store_true", help="only the compile check")
    return parser.parse_args(argv)


def build(checkpointing: bool | None) -> torch.nn.Module:
    base = AutoModelForSequenceClassification.from_pretrained(embedded_model_path(),
                                                              num_labels=1)
    if checkpointing is not None:
        base.gradient_checkpointing_enable({"use_reentrant": checkpointing})
    torch.manual_seed(0)
    return get_peft_model(base, DeepLoraConfig(r=8, depth=3, target_modules="all-dense")).train()


def make_batch(batch: int, length: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 29000, (batch, length), generator=generator)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids),
            "labels": torch.randn(batch, 1, generator=generator)}


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def one_setting(args: argparse.Namespace) -> dict[str, float]:
    """Runs in a child process: peak RSS of the first step, then saved bytes and times."""
    torch.set_num_threads(args.threads)
    batch = make_batch(args.batch, args.length)
    model = build(SETTINGS[args.one])
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4,
                                 eps=1e-6)
    before = peak_rss()
    times = []
    for _ in range(1 + args.steps):
        start = time.perf_counter()
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    peak = peak_rss() - before
    return {"peak_rss_mib": peak / MIB, "saved_mib": saved_bytes(model, batch) / MIB,
            "step_s": statistics.median(times[1:]), "loss": float(loss)}


def compile_check(threads: int) -> dict[str, float]:
    """Inductor-compiled vs eager Deep LoRA MiniLM on batch 2 × 16: loss, gradients, time
    (dropout off, so that both runs compute the same function)."""
    torch.set_num_threads(threads)
    batch = make_batch(2, 16)
    model = build(None).eval()
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    runs = {}
    for name, run in (("eager", model), ("inductor", torch.compile(model))):
        start = time.perf_counter()
        loss = run(**batch).loss
        loss.backward()
        runs[name] = (float(loss), {n: p.grad.clone() for n, p in trainable.items()},
                      time.perf_counter() - start)
        model.zero_grad(set_to_none=True)
    (eager_loss, eager, _), (loss, grads, seconds) = runs["eager"], runs["inductor"]
    difference = max(float((grads[n] - eager[n]).abs().max() / eager[n].abs().max().clamp(
        min=1e-30)) for n in eager)
    return {"loss_difference": abs(loss - eager_loss), "max_relative_grad_difference": difference,
            "first_step_s": seconds}


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    if args.one:
        print(json.dumps(one_setting(args)))
        return
    if args.compile_only:
        print(compile_report(compile_check(args.threads)))
        return
    results = {}
    for name in SETTINGS:
        child = [sys.executable, __file__, *argv, "--one", name]
        done = subprocess.run(child, capture_output=True, text=True, check=True)
        results[name] = json.loads(done.stdout.strip().splitlines()[-1])
    plain = results["none"]
    print(f"Command: python {shlex.join(['benchmarks/bench_training_memory.py', *argv])}")
    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, {args.threads} threads")
    print(f"Model: all-MiniLM-L6-v2 + regression head, Deep LoRA r = 8, L = 3, all-dense "
          f"(39 layers), batch {args.batch}, length {args.length}, Adam; each setting in its own "
          f"process; step time median of {args.steps} after 1 warm-up")
    print()
    print("| gradient checkpointing | saved for backward (MiB) | vs none | peak RSS of a step "
          "(MiB) | vs none | step time (s) | vs none |")
    print("|---|---|---|---|---|---|---|")
    for name, row in results.items():
        print(f"| {name} | {row['saved_mib']:.1f} | {row['saved_mib'] / plain['saved_mib']:.3f}× "
              f"| {row['peak_rss_mib']:.1f} | {row['peak_rss_mib'] / plain['peak_rss_mib']:.3f}× "
              f"| {row['step_s']:.2f} | {row['step_s'] / plain['step_s']:.2f}× |")
    losses = {name: row["loss"] for name, row in results.items()}
    print(f"\nloss after the last step per setting (same data, same init): {losses}")
    if args.compile:
        print("\n" + compile_report(compile_check(args.threads)))


def compile_report(check: dict[str, float]) -> str:
    return (f"torch.compile (inductor), batch 2 × 16, dropout off: |loss − eager| = "
            f"{check['loss_difference']:.2e}, largest relative gradient difference "
            f"{check['max_relative_grad_difference']:.2e}, first compiled step (compilation "
            f"included) {check['first_step_s']:.0f} s")


if __name__ == "__main__":
    main(sys.argv[1:])
