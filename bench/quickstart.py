"""Time `kubetune run examples/quickstart.yaml`: start to the first training step, and in all.

    .venv/bin/python bench/quickstart.py [--repeat N]

Each repeat runs in a fresh run folder (a cold start: workers start, build or load the model,
form the process group, train 40 steps on 2 local "nodes", then the evaluation runs). The
builtin model is built once beforehand, as a first `kubetune run` on a machine does.
"""

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def one_run(folder: Path) -> tuple[float, float]:
    started = time.monotonic()
    process = subprocess.run([str(Path(sys.executable).parent / "kubetune"), "run",
                              str(REPO / "examples" / "quickstart.yaml"), "--run-dir", str(folder)],
                             capture_output=True, text=True)
    total = time.monotonic() - started
    if process.returncode != 0:
        sys.exit(f"kubetune run failed ({process.returncode}):\n{process.stdout[-3000:]}")
    first = re.search(r"first step after\D*([\d.]+) s", process.stdout)
    return float(first.group(1)), total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    repeats = parser.parse_args().repeat
    subprocess.run([sys.executable, "-m", "trainer_entrypoint", "build-tiny"], check=True, capture_output=True)
    firsts, totals = [], []
    with tempfile.TemporaryDirectory() as scratch:
        for index in range(repeats):
            first, total = one_run(Path(scratch) / f"run-{index}")
            firsts.append(first)
            totals.append(total)
            print(f"run {index + 1}: first step after {first:.1f} s, total {total:.1f} s", flush=True)
    print(f"median of {repeats}: first step after {statistics.median(firsts):.1f} s, "
          f"total {statistics.median(totals):.1f} s")


if __name__ == "__main__":
    main()
