"""The tables of ``docs/results.md`` come from the per-run result files committed under
``docs/results/``: each report rebuilt from those files alone equals the committed report, and
every row of its tables stands in ``docs/results.md``."""

from __future__ import annotations

import json
import math
from functools import partial
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"


def _rows(markdown: str) -> list[str]:
    """The data rows of every table (not the header or separator rows)."""
    lines = markdown.splitlines()
    return [line for i, line in enumerate(lines) if line.startswith("| ")
            and not line.startswith("|---") and not (i + 1 < len(lines)
                                                      and lines[i + 1].startswith("|---"))]


def _same(a: object, b: object) -> bool:
    """Equal JSON values, floats to a relative 1e-9 (summation order may differ by machine)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float):
        return a == b or math.isclose(a, b, rel_tol=1e-9) or (math.isnan(a) and math.isnan(b))
    return type(a) is type(b) and a == b


def _rebuild_nlg(out: Path) -> str:
    from deeplora.experiments.nlg_fewshot import nlg_cells, write_nlg_report
    from deeplora.nlg.train import load_nlg_results

    folder = RESULTS / "nlg-fewshot-cpu"
    cells = nlg_cells("cpu", range(5))
    write_nlg_report("nlg-fewshot", [(config, load_nlg_results(folder / "runs", config, seeds))
                                     for config, seeds in cells], out)
    return "nlg-fewshot.md"


def _rebuild_nlg_checkpoints(out: Path) -> str:
    """``deeplora experiment nlg-checkpoints --preset cpu --lrs 1e-4,3e-4,1e-3,3e-3 --seeds 0-5
    --lr-seeds 0 --report-only --out docs/results/nlg-checkpoints-cpu``: the test scores of the
    chosen checkpoints are in the run files, nothing is generated."""
    from deeplora.experiments.nlg_checkpoints import NAME, plan, settings_text, write_report
    from deeplora.nlg.train import load_nlg_results

    folder = RESULTS / "nlg-checkpoints-cpu"
    cells = plan("cpu", (1e-4, 3e-4, 1e-3, 3e-3), range(6), eval_every=10, dev_mrs=24)
    write_report([(cell, load_nlg_results(folder / "runs", cell.config, cell.seeds))
                  for cell in cells], out, settings_text(cells, (0,)), (0,))
    return f"{NAME}.md"


STSB_FOLDERS = {"stsb-fewshot": "stsb-fewshot-practical-bi",
                "stsb-ranks": "stsb-ranks-practical-bi",
                "rank-histogram": "stsb-fewshot-practical-bi",
                "narrow-vs-wide": "narrow-vs-wide-practical-bi"}


def _rebuild_stsb(name: str, out: Path) -> str:
    """``deeplora experiment <name> --report-only --preset practical --head bi --seeds 0-4
    --padding longest --out docs/results/<folder>``: seeds not run are skipped, as the command
    skips them."""
    from deeplora.experiments.finetune_paper import Options, plan
    from deeplora.experiments.finetune_report import write_report
    from deeplora.finetune.runs import load_results

    folder = RESULTS / STSB_FOLDERS[name]
    options = Options(seeds=tuple(range(5)), heads=("bi",), preset="practical",
                      padding="longest")
    write_report(name, [(cell, load_results(folder / "runs", cell.config, cell.seeds))
                        for cell in plan(name, options, None)], out)
    return f"{name}.md"


def _rebuild_finetune_command(out: Path) -> str:
    """``deeplora finetune --method deep-lora,lora`` on the embedded SmolLM2: the zero-shot
    cell, then the methods in the command's order, seeds as found."""

    from deeplora.finetune.config import FinetuneConfig
    from deeplora.finetune.report import markdown, summarize
    from deeplora.finetune.runs import load_results
    from deeplora.finetune.sweep import Cell

    folder = RESULTS / "stsb-smollm2-cross"
    order = ("zero-shot", "deep-lora", "lora")
    cells = []
    for run in folder.glob("*/config.json"):
        config = FinetuneConfig.from_dict(json.loads(run.read_text()))
        seeds = tuple(sorted(int(f.stem.split("-")[1]) for f in run.parent.glob("seed-*.json")))
        cells.append(Cell(config, seeds, {"method": config.method, "head": config.head}))
    cells.sort(key=lambda cell: order.index(cell.config.method))
    results = [(cell, load_results(folder, cell.config, cell.seeds)) for cell in cells]
    (out / "summary.md").write_text(markdown("stsb: deep-lora, lora", summarize(results)))
    return "summary.md"


PROMPT_COMMON = {"model": "smollm2-135m-instruct", "template": "chat", "steps": 100,
                 "eval_every": 10, "batch_size": 16}
PROMPT_SWEEPS = {
    # deeplora experiment prompt-fewshot --task sst2 --samples 16 --ranks 8 --lrs 3e-4,1e-3
    #   --seeds 0-1 --steps 12 --batch-size 8 --eval-every 6 --heldout-samples 16
    #   --test-samples 48 --out docs/results/prompt-fewshot-cpu
    "prompt-fewshot-cpu": dict(tasks=["sst2"], samples=(16,), ranks=(8,), lrs=(3e-4, 1e-3),
                               methods=("deep-lora", "lora", "peft-lora"), seeds=(0, 1),
                               steps=12, batch_size=8, eval_every=6, heldout_samples=16,
                               dev_samples=48),
    # deeplora experiment prompt-fewshot --task sst2,stsb,mrpc,cola --methods '' --seeds 0
    #   --heldout-samples 0 --test-samples 64 --template T --out docs/results/prompt-zero-shot-T
    **{f"prompt-zero-shot-{t}": dict(tasks=["sst2", "stsb", "mrpc", "cola"], samples=(16,),
                                     ranks=(8,), lrs=(1e-4, 3e-4, 1e-3), methods=(),
                                     seeds=(0,), heldout_samples=0, dev_samples=64,
                                     template=t) for t in ("chat", "plain")},
    # deeplora experiment prompt-fewshot --task stsb --methods '' --seeds 0 --heldout-samples 0
    #   --test-samples 200 --template chat --out docs/results/prompt-zero-shot-stsb
    "prompt-zero-shot-stsb": dict(tasks=["stsb"], samples=(16,), ranks=(8,),
                                  lrs=(1e-4, 3e-4, 1e-3), methods=(), seeds=(0,),
                                  heldout_samples=0, dev_samples=200, template="chat"),
}


def _rebuild_prompt(folder: str, out: Path) -> str:
    """``deeplora experiment prompt-fewshot … --report-only`` with the sweep's arguments."""
    from deeplora.experiments.prompt_fewshot import NAME, plan, write_report
    from deeplora.finetune.runs import load_results

    args = dict(PROMPT_SWEEPS[folder])
    cells = plan(args.pop("tasks"), args.pop("samples"), args.pop("ranks"), args.pop("lrs"),
                 args.pop("methods"), args.pop("seeds"), **{**PROMPT_COMMON, **args})
    write_report([(cell, load_results(RESULTS / folder / "runs", cell.config, cell.seeds))
                  for cell in cells], out)
    return f"{NAME}.md"


def _rebuild_prompt_select(out: Path) -> str:
    """``deeplora experiment prompt-select --report-only --out docs/results/prompt-select``."""

    from deeplora.experiments.prompt_select import NAME, write_report

    write_report(json.loads((RESULTS / "prompt-select" / f"{NAME}.json").read_text()), out)
    return f"{NAME}.md"


def _rebuild_ratings(name: str, out: Path) -> str:
    """``deeplora experiment movielens [--dataset NAME] --report-only``: the table from
    the per-split files."""
    import shutil

    from deeplora.experiments.movielens import report

    for path in (RESULTS / name).glob(f"{name}-*.json"):
        shutil.copy(path, out)
    report(out, name)
    return f"{name}.md"


def _rebuild_topk(out: Path) -> str:
    """``deeplora experiment topk``'s report from its per-dataset ``topk-*.json`` files."""
    from deeplora.experiments.topk import report

    (out / "topk.md").write_text(report(RESULTS / "topk"))
    return "topk.md"


def _rebuild_dmc_depth(out: Path) -> str:
    """``deeplora experiment dmc-depth --out docs/results/dmc``: the report from the runs."""

    from deeplora.experiments.dmc import depth_report

    summary = json.loads((RESULTS / "dmc" / "dmc-depth.json").read_text())
    (out / "dmc-depth.md").write_text(depth_report(summary))
    return "dmc-depth.md"


def _rebuild_dmc_lag(out: Path) -> str:
    """``deeplora experiment dmc-lag --report-only --out docs/results/dmc/lag``."""

    from deeplora.experiments.dmc_lag import lag_report

    folder = RESULTS / "dmc" / "lag"
    records = [json.loads(p.read_text()) for p in sorted((folder / "runs").glob("*.json"))]
    authors = json.loads((folder / "authors-code.json").read_text())
    (out / "dmc-lag.md").write_text(lag_report(records, authors))
    return "dmc-lag.md"


@pytest.mark.parametrize(("folder", "rebuild"), [
    ("nlg-fewshot-cpu", _rebuild_nlg),
    ("nlg-checkpoints-cpu", _rebuild_nlg_checkpoints),
    *((folder, partial(_rebuild_stsb, name)) for name, folder in STSB_FOLDERS.items()),
    ("stsb-smollm2-cross", _rebuild_finetune_command),
    *((name, partial(_rebuild_ratings, name))
      for name in ("movielens", "filmtrust", "book-crossing", "book-crossing-5")),
    ("topk", _rebuild_topk),
    *((folder, partial(_rebuild_prompt, folder)) for folder in PROMPT_SWEEPS),
    ("prompt-select", _rebuild_prompt_select),
    ("dmc", _rebuild_dmc_depth), ("dmc/lag", _rebuild_dmc_lag)],
    ids=["nlg-fewshot", "nlg-checkpoints", *STSB_FOLDERS, "stsb-smollm2", "movielens",
         "filmtrust", "book-crossing", "book-crossing-5", "topk", *PROMPT_SWEEPS, "prompt-select",
         "dmc-depth", "dmc-lag"])
def test_report_rebuilds_from_committed_runs_and_stands_in_results_md(
        folder: str, rebuild, tmp_path: Path) -> None:
    name = rebuild(tmp_path)
    rebuilt = (tmp_path / name).read_text()
    assert rebuilt == (RESULTS / folder / name).read_text()
    for written in tmp_path.glob("*.json"):  # the report's JSON twin, numbers to round-off
        committed = json.loads((RESULTS / folder / written.name).read_text())
        assert _same(json.loads(written.read_text()), committed), written.name
    document = (ROOT / "docs" / "results.md").read_text()
    rows = _rows(rebuilt)
    assert rows and [row for row in rows if row not in document] == []


def test_every_published_dmc_run_that_never_left_its_initialization_is_flagged() -> None:
    """A GD run whose train loss never halved measured nothing (project rule: flag it): the
    committed ``dmc-depth`` runs all left it, and the ``dmc-lag`` report counts the ones that
    did not."""

    depth = json.loads((RESULTS / "dmc" / "dmc-depth.json").read_text())["runs"]
    assert len(depth) > 20 and all(run["outcome"] != "never left init" for run in depth)
    lag = []
    for path in (RESULTS / "dmc" / "lag" / "runs").glob("*.json"):
        record = json.loads(path.read_text())
        lag += [record["original"], *record["compressed"].values()]
    stuck = sum(run["outcome"] == "never left init" for run in lag)
    assert stuck == sum(not run["left_init"] and not run["diverged"] for run in lag)
    report = (RESULTS / "dmc" / "lag" / "dmc-lag.md").read_text()
    assert (f"{stuck} never left init" in report) == (stuck > 0)
