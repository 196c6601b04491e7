"""``deeplora export-lora``: a saved Deep LoRA adapter folder to a standard PEFT LoRA folder.

Thin: parses, loads the base model and the adapter, and calls
:func:`deeplora.adapters.export.export_lora`. torch/transformers/peft are imported only when
the command runs.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from deeplora.cli import HelpFormatter

HELD_OUT = {"batch": 4, "length": 32, "seed": 0}
"""The held-out batch the export is checked on: random token ids (no data needed)."""


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export-lora",
        help="convert a saved Deep LoRA adapter into a plain PEFT LoRA adapter folder",
        description="Read the Deep LoRA adapter folder IN (adapter_config.json + "
        "adapter_model.safetensors), factor every layer's ΔW by SVD, keep its numerical rank "
        "(singular values above max(--atol, --tol·σ₁)) and write OUT, a standard PEFT LoRA "
        "folder (rank_pattern per layer, scaling 1) that loads with PeftModel.from_pretrained "
        "without deeplora. Prints the ranks, the exported size and the largest output "
        "difference against the Deep LoRA model on a held-out batch of random token ids.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("input", metavar="IN", help="Deep LoRA adapter folder")
    p.add_argument("output", metavar="OUT", help="new PEFT LoRA folder (must not exist or be "
                   "empty)")
    p.add_argument("--tol", type=float, default=1e-4,
                   help="relative tolerance: keep singular values above tol·σ₁ of the layer")
    p.add_argument("--atol", type=float, default=0.0,
                   help="absolute tolerance: keep singular values above atol")
    p.add_argument("--model", default=None, help="base model id or folder (default: the "
                   "adapter's base_model_name_or_path)")
    p.add_argument("--num-labels", type=int, default=None, help="for a sequence-classification "
                   "adapter whose head is not saved with it")
    p.add_argument("--report", default=None, help="also write the report as JSON here")
    p.set_defaults(func=run)


def check_args(args: argparse.Namespace) -> None:
    """The numeric options, checked before anything is read or loaded."""
    if not (math.isfinite(args.tol) and 0 <= args.tol < 1):
        raise ValueError(f"--tol must be a number in [0, 1), got {args.tol}")
    if not (math.isfinite(args.atol) and args.atol >= 0):
        raise ValueError(f"--atol must be a finite number >= 0, got {args.atol}")
    if args.tol == 0 and args.atol == 0:
        raise ValueError("--tol 0 with --atol 0 keeps every singular value above 0, rounding "
                         "noise included (a full-rank export); pass --tol > 0 or --atol > 0")
    if args.num_labels is not None and args.num_labels < 1:
        raise ValueError(f"--num-labels must be >= 1, got {args.num_labels}")


def run(args: argparse.Namespace) -> int:
    from deeplora.output import check_writable, write_json

    check_args(args)
    check_writable(args.report)
    from deeplora.adapters.export import (
        CONFIG_NAME,
        WEIGHTS_NAME,
        check_new_folder,
        export_lora,
        load_deeplora,
        random_batch,
        read_deeplora_config,
    )

    if not (args.model or read_deeplora_config(args.input).get("base_model_name_or_path")):
        raise ValueError(f"{args.input!r} names no base model: pass --model")
    check_new_folder(args.output)
    from deeplora.finetune.models import quiet_transformers

    quiet_transformers()
    model = load_deeplora(args.input, args.model, args.num_labels)
    report = export_lora(model, args.output, rtol=args.tol, atol=args.atol,
                         batch=random_batch(model, **HELD_OUT))
    ranks: dict[int, int] = {}
    for rank in report.ranks.values():
        ranks[rank] = ranks.get(rank, 0) + 1
    size_in = (Path(args.input) / WEIGHTS_NAME).stat().st_size
    lines = [
        f"exported {len(report.ranks)} layers to {args.output} ({CONFIG_NAME} + {WEIGHTS_NAME})",
        "ranks: " + ", ".join(f"{n} layers at rank {r}" for r, n in sorted(ranks.items())),
        f"dropped (ΔW numerically 0): {len(report.dropped)} layers",
        f"largest relative truncation σ_(k+1)/σ_1: {max(report.truncation.values()):.3g}",
        f"size: {report.size_bytes:,} bytes (Deep LoRA {size_in:,}); adapter parameters "
        f"{report.lora_parameters:,} (Deep LoRA {report.deeplora_parameters:,})",
        f"largest output difference on a held-out batch ({HELD_OUT['batch']}×"
        f"{HELD_OUT['length']} random token ids): {report.max_output_difference:.3g}",
    ]
    print("\n".join(lines))
    if args.report:
        data: dict[str, Any] = {**report.to_dict(), "deeplora_size_bytes": size_in,
                                "held_out": HELD_OUT}
        write_json(args.report, data)
    return 0
