"""Benchmark: Deep LoRA vs vanilla LoRA on the embedded SmolLM2-135M-Instruct (E2E NLG).

One run, same process, methods interleaved so that load on a shared machine hits them alike.
Measures, on real E2E dev examples in the causal-LM format (chat-template prompt + reference):

- training step time (forward, backward, Adam step; median over steps) of Deep LoRA (L = 3)
  and vanilla LoRA (L = 2), r = 8, all-linear targets (210 layers), and their ratio
  (target: Deep LoRA ≤ 1.05× vanilla LoRA);
- greedy generation time of the base model vs Deep LoRA merged into the weights
  (``merge_and_unload``), exactly ``--new-tokens`` tokens per prompt (``min_new_tokens`` set
  so both produce the same amount of work), median over repeats (target: ≤ 1.02×); the
  unmerged adapter for reference.

Usage: ``python benchmarks/bench_nlg.py [--steps 3] [--warmup 1] [--batch 16] [--threads 1]``
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

import torch
import transformers
from transformers.utils import logging

from deeplora.nlg.config import nlg_preset
from deeplora.nlg.data import few_shot, load_e2e
from deeplora.nlg.models import Formatter, add_adapters, load_generative, resolve_generative_model


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per method")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per method first")
    parser.add_argument("--batch", type=int, default=16, help="training batch (E2E examples)")
    parser.add_argument("--prompts", type=int, default=8, help="prompts per generation call")
    parser.add_argument("--new-tokens", type=int, default=32, help="tokens generated per prompt")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed generation calls each (0: no generation benchmark)")
    parser.add_argument("--data-dir", default="../shared/data/e2e", help="E2E folder")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    return parser.parse_args(argv)


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    path = resolve_generative_model(None)
    base, tokenizer = load_generative(path)
    dev = load_e2e("dev", args.data_dir)
    examples = few_shot(dev, args.batch, seed=0)
    methods = ("deep-lora", "lora")
    models, optimizers, formatter = {}, {}, None
    for method in methods:
        torch.manual_seed(0)
        config = nlg_preset("cpu", method=method)
        formatter = Formatter(tokenizer, config, encoder_decoder=False)
        models[method] = add_adapters(copy.deepcopy(base), config).train()
        optimizers[method] = torch.optim.Adam(
            [p for p in models[method].parameters() if p.requires_grad], lr=1e-4,
            betas=(0.9, 0.999), eps=1e-6)
    batch = formatter.train_batch(examples)
    times: dict[str, list[float]] = {m: [] for m in methods}

    def step(method: str) -> None:
        loss = models[method](**batch).loss
        loss.backward()
        optimizers[method].step()
        optimizers[method].zero_grad()

    for i in range(args.warmup + args.steps):
        for method in methods:
            seconds = timed(lambda m=method: step(m))
            if i >= args.warmup:
                times[method].append(seconds)
        print(f"train step {i + 1}/{args.warmup + args.steps}: "
              + ", ".join(f"{m} {times[m][-1]:.2f} s" for m in methods if times[m]), flush=True)
    train = {m: statistics.median(v) for m, v in times.items()}
    fastest = {m: min(v) for m, v in times.items()}
    gen_models: dict[str, torch.nn.Module] = {}
    gen: dict[str, float] = {}
    if args.repeats > 0:
        gen_models, gen = generation_times(base, models.pop("deep-lora"), formatter, dev, args)
    print_table(argv, args, batch, train, fastest, gen_models, gen)


def generation_times(base: torch.nn.Module, deep: torch.nn.Module, formatter: Formatter,
                     dev: list, args: argparse.Namespace
                     ) -> tuple[dict[str, torch.nn.Module], dict[str, float]]:
    """Median seconds of greedy generation: base, merged and unmerged Deep LoRA."""
    deep.eval()
    merged = copy.deepcopy(deep).merge_and_unload().eval()
    base.eval()
    mrs = [e.mr for e in few_shot(dev, args.prompts, seed=1)]
    prompts = formatter.generation_batch(mrs)
    gen_config = formatter.generation_config(base)
    gen_config.update(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                      num_beams=1)
    gen_models = {"base": base, "merged Deep LoRA": merged, "unmerged Deep LoRA": deep}
    gen_times: dict[str, list[float]] = {name: [] for name in gen_models}
    with torch.no_grad():
        for model in gen_models.values():  # warm-up
            model.generate(**prompts, generation_config=gen_config)
        for _ in range(args.repeats):
            for name, model in gen_models.items():
                gen_times[name].append(timed(
                    lambda m=model: m.generate(**prompts, generation_config=gen_config)))
    return gen_models, {name: statistics.median(v) for name, v in gen_times.items()}


def print_table(argv: list[str], args: argparse.Namespace, batch: dict, train: dict[str, float],
                fastest: dict[str, float], gen_models: dict, gen: dict[str, float]) -> None:
    tokens = int(batch["attention_mask"].sum())
    print()
    print(f"`python benchmarks/bench_nlg.py {shlex.join(argv)}`".replace(" `", "`"))
    print()
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, "
          f"{torch.get_num_threads()} threads, {platform.machine()}, SmolLM2-135M-Instruct "
          f"float32, r = 8, all-linear (210 layers); training batch {args.batch} E2E examples "
          f"({batch['input_ids'].shape[1]} tokens padded, {tokens} real); generation "
          f"{args.prompts} prompts × {args.new_tokens} new tokens, greedy")
    print()
    print("| measurement | value | ratio | target |")
    print("|---|---|---|---|")
    ratio = train["deep-lora"] / train["lora"]
    print(f"| train step, vanilla LoRA (median of {args.steps}) | {train['lora']:.2f} s | 1 | |")
    print(f"| train step, Deep LoRA (median of {args.steps}) | {train['deep-lora']:.2f} s | "
          f"{ratio:.3f} | ≤ 1.05 {'met' if ratio <= 1.05 else 'NOT met'} |")
    low = fastest["deep-lora"] / fastest["lora"]
    print(f"| train step, fastest: LoRA {fastest['lora']:.2f} s, Deep LoRA "
          f"{fastest['deep-lora']:.2f} s | | {low:.3f} | |")
    for name in gen_models:
        r = gen[name] / gen["base"]
        target = ""
        if name == "merged Deep LoRA":
            target = f"≤ 1.02 {'met' if r <= 1.02 else 'NOT met'}"
        print(f"| generate, {name} (median of {args.repeats}) | {gen[name]:.2f} s | {r:.3f} | "
              f"{target} |")


if __name__ == "__main__":
    main(sys.argv[1:])
