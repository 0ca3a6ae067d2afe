"""Reads the TensorBoard scalars of a lam run folder with the tensorboard package and checks
them against the run's metrics.jsonl: every number of every record must be there, at its step.

usage: .venv/bin/python tools/read_tensorboard.py RUN   (crates/lam/tests/tensorboard_python.rs)
"""
import json
import math
import sys
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def flatten(prefix, v, out):
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return
    if isinstance(v, (int, float)):
        out[prefix] = float(v)
    elif isinstance(v, dict):
        for k, x in v.items():
            flatten(f"{prefix}/{k}", x, out)
    elif isinstance(v, list) and len(v) <= 16:
        for i, x in enumerate(v):
            flatten(f"{prefix}/{i}", x, out)


def main(run):
    run = Path(run)
    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    board = {}
    for tag in acc.Tags()["scalars"]:
        for e in acc.Scalars(tag):
            board[(tag, e.step)] = e.value
    expected = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        split = rec.get("split", "train")
        flat = {}
        for k, v in rec.items():
            if k not in ("step", "split"):
                flatten(f"{split}/{k}", v, flat)
        for tag, v in flat.items():
            expected[(tag, rec.get("step", 0))] = v
    missing = [k for k in expected if k not in board]
    wrong = [k for k, v in expected.items() if k in board and not (
        math.isclose(board[k], v, rel_tol=1e-6, abs_tol=1e-6) or (math.isnan(v) and math.isnan(board[k])))]
    print(f"{len(expected)} scalars in metrics.jsonl, {len(board)} in TensorBoard "
          f"({len(acc.Tags()['scalars'])} tags); missing {len(missing)}, different {len(wrong)}")
    if missing or wrong:
        print("first missing:", missing[:5], "first different:", wrong[:5])
        sys.exit(1)


if __name__ == "__main__":
    main(sys.argv[1])
