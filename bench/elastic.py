"""What a resize of an elastic job costs: the wall time from `kubetune scale` to the first
step at the new size, and the steps lost (trained after the checkpoint training went on from).

    .venv/bin/python bench/elastic.py [--strategies ddp zero2 zero3 fsdp] [--max-steps 400]

Each strategy runs the trial of tests/elastic_trial.py under `kubetune run`: 2 nodes, to 1
after checkpoint 40, back to 2 once a checkpoint was saved at 1. Steps log one by one here, so
the first step at the new size is seen when it happens.
"""

import argparse
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from elastic_trial import elastic_job, run_trial  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategies", nargs="+", default=["ddp", "zero2", "zero3", "fsdp"])
    parser.add_argument("--max-steps", type=int, default=400)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    print("| strategy | resize | last step at the old size | went on from | steps lost | scale → first step (s) |")
    print("|---|---|---|---|---|---|")
    failed = False
    builtin = tempfile.TemporaryDirectory(prefix="kubetune-builtin-")
    os.environ.setdefault("KUBETUNE_BUILTIN_DIR", builtin.name)  # the tiny model, built once
    for strategy in args.strategies:
        with tempfile.TemporaryDirectory(prefix="kubetune-elastic-") as folder:
            job = elastic_job(Path(folder), strategy, args.max_steps, logging_steps=1)
            trial = run_trial(job, Path(folder) / "run")
            if trial.returncode != 0:
                print(f"{strategy}: the run failed (exit {trial.returncode}):\n{trial.output[-3000:]}", file=sys.stderr)
                failed = True
                continue
            before = 2
            for resize in trial.resizes:
                lost = resize.last_step - resize.resumed_from if resize.last_step is not None else None
                seconds = resize.first_step_at - resize.asked_at
                print(f"| {strategy} | {before} → {resize.nodes} | {resize.last_step} | "
                      f"checkpoint-{resize.resumed_from} | {lost} | {seconds:.1f} |")
                before = resize.nodes
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
