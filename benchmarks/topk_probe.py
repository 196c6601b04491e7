"""Points beyond the grids' edges, on the topk run's validation split only (never its test
file): ``select`` of :mod:`deeplora.experiments.topk` with hand-given grids, on the training
part of ``random_split(data, 0)`` as ``deeplora experiment topk --dataset DATASET`` uses.

    PYTHONPATH=src python benchmarks/topk_probe.py book-crossing 9 \
        docs/results/topk/probe-book-crossing.json \
        '{"rank": [40, 80], "alpha": [0.1, 0.3], "reg": [0.3, 1.0]}' \
        '{"factors": [200], "regularization": [30.0, 100.0], "alpha": [10.0, 30.0]}'
"""
import argparse
import json
import sys
from pathlib import Path

from deeplora.completion.data import random_split
from deeplora.experiments.movielens import LOADERS
from deeplora.experiments.topk import select

name, threshold, out = sys.argv[1], float(sys.argv[2]), Path(sys.argv[3])
grid = {"implicit": json.loads(sys.argv[4]), "als": json.loads(sys.argv[5])}
train, _ = random_split(LOADERS[name](), 0)
args = argparse.Namespace(seed=0, k=10, threshold=threshold)
result = select(train, args, grid, print)
out.write_text(json.dumps(result, indent=1))
