"""``prompt-select``: the zero-shot prompt (wording, label words, template) of a task chosen on
held-out *training* rows, never on the GLUE dev split (the test set of ``prompt-fewshot``).

For each task, every candidate :class:`~deeplora.finetune.prompt.Verbalizer` of
:data:`CANDIDATES` (the one declared before the selection first) under each template scores the same
``heldout_samples`` training rows (:func:`~deeplora.finetune.data.hold_out`, the rows
``prompt-fewshot`` holds out as its dev set) with the untouched model: the label words'
next-token logits, argmax → class. Candidates that differ only in their label words share one
forward pass. The report gives per candidate the task's main metric on those rows, the
majority-class rate, the share of rows predicted as the majority class, the ROC AUC of the
margin between the two label words (two classes), and marks the best
(highest metric; ties: the earlier candidate, chat before plain). Forward passes only.

``prompt-select.json`` keeps every row's label-word logits, so ``--report-only`` rebuilds the
table without the model; a later call with the same model and rows replaces the tasks it scores
and keeps the others.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from deeplora.experiments import Arg, Fast, experiment
from deeplora.finetune.data import DATA_DIR_ENV, DataError, get_task, hold_out, load_split
from deeplora.finetune.metrics import compute_metrics
from deeplora.finetune.prompt import VERBALIZERS, YES_NO, Verbalizer

NAME = "prompt-select"
TEMPLATES = ("chat", "plain")
_PAIR = VERBALIZERS["mrpc"].body
_COLA = VERBALIZERS["cola"].body


def _cased(body: str, question: str, words: tuple[str, ...]) -> tuple[Verbalizer, Verbalizer]:
    """The candidate with its label words as given and with them capitalized (one pass)."""
    return (Verbalizer(body, f"{question} {YES_NO}", words),
            Verbalizer(body, f"{question} {YES_NO}", tuple(w.capitalize() for w in words)))


CANDIDATES: dict[str, tuple[Verbalizer, ...]] = {
    "mrpc": (
        VERBALIZERS["mrpc"],
        _cased(_PAIR, "Do the two sentences mean the same thing?", ("no", "yes"))[1],
        *_cased(_PAIR, "Is Sentence 2 a paraphrase of Sentence 1?", ("no", "yes")),
        *_cased(_PAIR, "Do Sentence 1 and Sentence 2 report the same facts?", ("no", "yes")),
        *_cased(_PAIR, "Does Sentence 2 add or change any information of Sentence 1?",
                ("yes", "no")),
    ),
    "cola": (
        VERBALIZERS["cola"],
        _cased(_COLA, "Is this sentence grammatically acceptable English?", ("no", "yes"))[1],
        *_cased(_COLA, "Is this sentence grammatically correct?", ("no", "yes")),
        *_cased(_COLA, "Does this sentence contain a grammatical error?", ("yes", "no")),
    ),
    # regression: the words stand for 0 … 5 evenly (no → 0, yes → 5: score 5·P(yes | no, yes))
    "stsb": (
        Verbalizer(_PAIR, "How similar are the two sentences in meaning, from 0 (unrelated) to 5 "
                   "(the same meaning)? Answer with one digit.",
                   tuple(str(k) for k in range(6)), spaced=False),
        *_cased(_PAIR, "Do the two sentences mean the same thing?", ("no", "yes")),
        *_cased(_PAIR, "Are the two sentences about the same thing?", ("no", "yes")),
    ),
}


def _pass_key(verb: Verbalizer) -> tuple[str, str, bool]:
    """Candidates with the same key share one forward pass (they differ in label words only)."""
    return verb.body, verb.question, verb.spaced


def score_rows(model: Any, tokenizer: Any, task: str, template: str,
               candidates: Sequence[Verbalizer], rows: Sequence[dict[str, Any]],
               max_length: int = 128, batch_size: int = 8) -> list[list[list[float]]]:
    """Per candidate, each row's label-word logits ``(n, k)`` after its prompt; one forward
    pass per distinct wording (:func:`_pass_key`)."""
    import torch

    from deeplora.finetune.prompt import PromptCollator, label_logits, label_token_ids

    glue = get_task(task)
    out: list[list[list[float]] | None] = [None] * len(candidates)
    for key in dict.fromkeys(map(_pass_key, candidates)):
        members = [i for i, c in enumerate(candidates) if _pass_key(c) == key]
        ids = [label_token_ids(tokenizer, glue, template, candidates[i]) for i in members]
        flat = torch.tensor(sorted({t for group in ids for t in group}))
        collate = PromptCollator(tokenizer, glue, template, max_length, False,
                                 candidates[members[0]])
        logits = []
        with torch.no_grad():
            for start in range(0, len(rows), batch_size):
                batch = collate(list(rows[start:start + batch_size]))
                logits.append(label_logits(model, batch["inputs"], flat))
        table = torch.cat(logits)
        column = {t: j for j, t in enumerate(flat.tolist())}
        for i, group in zip(members, ids, strict=True):
            out[i] = table[:, [column[t] for t in group]].tolist()
    assert all(o is not None for o in out), "a candidate was not scored"
    return out  # type: ignore[return-value]


def summarize(records: list[dict[str, Any]], labels: dict[str, list[float]]
              ) -> list[dict[str, Any]]:
    """One row per (task, template, candidate): main metric on the held-out rows, majority
    rate, share predicted as the majority class (classification; regression: the expected
    score, :func:`~deeplora.finetune.prompt.expected_score`, is the prediction), and ``best``
    on the best row of each task."""
    import torch

    from deeplora.finetune.prompt import expected_score

    rows = []
    for rec in records:
        task = get_task(rec["task"])
        gold = np.asarray(labels[rec["task"]])
        logits = np.asarray(rec["logits"])
        row = {"task": rec["task"], "template": rec["template"], "question": rec["question"],
               "words": rec["words"], "metric": task.main_metric, "majority_rate": None,
               "predicted_majority": None, "auc": None, "rows": len(gold), "best": False}
        if task.is_regression:
            pred = expected_score(torch.as_tensor(logits)).numpy()
        else:
            pred = logits.argmax(-1)
            majority = int(np.bincount(gold.astype(int)).argmax())
            row.update(majority_rate=float(np.mean(gold == majority)),
                       predicted_majority=float(np.mean(pred == majority)),
                       auc=_auc(gold, logits))
        rows.append({**row, "value": compute_metrics(task, pred, gold)[task.main_metric]})
    for task in dict.fromkeys(r["task"] for r in rows):
        ours = [r for r in rows if r["task"] == task]
        max(ours, key=lambda r: (np.nan_to_num(r["value"], nan=-np.inf),
                                 -ours.index(r)))["best"] = True
    return rows


def _auc(gold: np.ndarray, logits: np.ndarray) -> float | None:
    """ROC AUC of the margin z₁ − z₀ for class 1 (two classes, both present; else None): the
    ranking signal in the prompt whatever the argmax's bias between the two words."""
    from sklearn.metrics import roc_auc_score

    if logits.shape[-1] != 2 or len(set(gold.tolist())) != 2:
        return None
    return float(roc_auc_score(gold, logits[:, 1] - logits[:, 0]))


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [f"# {NAME}", "", "Zero-shot on held-out training rows (never the dev split); "
             "**bold**: the best of each task.", "",
             "| task | template | question | label words (class 0, 1, …) | metric | held-out "
             "| majority-class rate | predicted majority class | AUC of z₁ − z₀ | rows |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        value = f"{r['value']:.4f}"
        lines.append(f"| {r['task']} | {r['template']} | {r['question']} | "
                     f"{', '.join(r['words'])} | {r['metric']} | "
                     f"{f'**{value}**' if r['best'] else value} | "
                     + " | ".join("-" if r[k] is None else format(r[k], ".4f")
                                  for k in ("majority_rate", "predicted_majority", "auc"))
                     + f" | {r['rows']} |")
    return "\n".join(lines) + "\n"


def _read(path: Path) -> dict[str, Any]:
    """The contents of a ``prompt-select.json``; ``DataError`` naming it if it is not one."""
    from deeplora.output import read_json_object

    try:
        return read_json_object(path, ("model", "heldout_samples", "records", "labels"))
    except ValueError as exc:
        raise DataError(f"{path}: not a result of prompt-select ({exc})") from None


def write_report(data: dict[str, Any], out: Path) -> list[dict[str, Any]]:
    """``prompt-select.md`` from ``data`` (the contents of ``prompt-select.json``)."""
    from deeplora.output import write_atomic

    rows = summarize(data["records"], data["labels"])
    text = markdown(rows)
    write_atomic(out / f"{NAME}.md", lambda tmp: tmp.write_text(text))
    return rows


@experiment(NAME, help="choose a task's zero-shot prompt (wording, label words, template) on "
            "held-out training rows", arguments=[
    Arg("--task", default="mrpc,cola,stsb",
        help=f"tasks, comma-separated, of {sorted(CANDIDATES)}"),
    Arg("--templates", default=",".join(TEMPLATES), help="templates, comma-separated"),
    Arg("--heldout-samples", type=int, default=128,
        help="training rows scored (the first of prompt-fewshot's held-out draw)"),
    Arg("--model", default="smollm2-135m-instruct", help="causal LM id or folder"),
    Arg("--data-dir", default=None, help=f"GLUE folder; unset: ${DATA_DIR_ENV}, else the hub"),
    Arg("--report-only", action="store_true",
        help="rebuild prompt-select.md from prompt-select.json"),
], fast=Fast("held-out rows (8)", ("--heldout-samples",)))
def prompt_select(args: argparse.Namespace, out: Path) -> list[dict[str, Any]]:
    import json

    from deeplora.output import write_atomic

    path = out / f"{NAME}.json"
    if args.report_only:
        if not path.is_file():
            raise DataError(f"{path}: no such file (run prompt-select without --report-only "
                            "first)")
        rows = write_report(_read(path), out)
        print((out / f"{NAME}.md").read_text())
        return rows
    from transformers import AutoModelForCausalLM

    from deeplora.finetune.models import load_tokenizer, quiet_transformers, resolve_model

    tasks, templates = args.task.split(","), args.templates.split(",")
    for task in tasks:
        if task not in CANDIDATES:
            raise DataError(f"prompt-select has candidate prompts for {', '.join(CANDIDATES)}; "
                            f"got task {task!r}")
    for template in templates:
        if template not in TEMPLATES:
            raise DataError(f"unknown template {template!r}; choose one of "
                            f"{', '.join(TEMPLATES)}")
    if args.heldout_samples < 1:
        raise DataError(f"--heldout-samples must be >= 1, got {args.heldout_samples}")
    quiet_transformers()
    model_path = resolve_model(args.model)
    tokenizer = load_tokenizer(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path).eval()
    n = 8 if args.fast else args.heldout_samples
    data: dict[str, Any] = {"model": args.model, "heldout_samples": n, "records": [],
                            "labels": {}}
    if path.is_file():  # keep the other tasks of an earlier call with the same settings
        earlier = _read(path)
        if (earlier["model"], earlier["heldout_samples"]) == (args.model, n):
            data["records"] = [r for r in earlier["records"] if r["task"] not in tasks]
            data["labels"] = {t: v for t, v in earlier["labels"].items() if t not in tasks}
    for task in tasks:
        glue = get_task(task)
        _, heldout = hold_out(glue, load_split(glue, "train", args.data_dir), n,
                              load_split(glue, "dev", args.data_dir))
        rows = list(heldout)
        data["labels"][task] = [r["label"] for r in rows]
        for template in templates:
            candidates = CANDIDATES[task]
            for verb, logits in zip(candidates, score_rows(model, tokenizer, task, template,
                                                           candidates, rows), strict=True):
                data["records"].append({"task": task, "template": template,
                                        "question": verb.question, "words": list(verb.words),
                                        "logits": np.round(logits, 4).tolist()})
    # one line: 2 logits × rows × candidates × templates, far smaller than indented
    write_atomic(path, lambda tmp: tmp.write_text(json.dumps(data) + "\n"))
    rows = write_report(data, out)
    print((out / f"{NAME}.md").read_text())
    return rows
