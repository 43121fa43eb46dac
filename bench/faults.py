"""The operator under API faults and SIGKILLs: jobs run to Succeeded or Failed, and the table
in docs/reliability.md is printed.

    .venv/bin/python bench/faults.py [--jobs 20] [--kills 30] [--seed 14]

Each trial starts the emulated API server and the real `kubetune operator` process (see
tests/fault_trial.py). The first trial injects no fault and kills nothing, the baseline for
the time to converge; the second injects faults and kills nothing. The faults: 10 % 500,
5 % 409 (writes), 5 % 429 with Retry-After and 10 % +200 ms on the operator's requests. Each
further trial injects them too, and kills the operator with SIGKILL at random moments,
restarting it each time. Kills are spread over trials of at most
five kills each, so every job's lifecycle sees them.
"""

import argparse
import collections
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from fault_trial import Trial, run_trial  # noqa: E402
from kube_emulator import FaultPlan  # noqa: E402


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def row(name: str, trials: list[Trial]) -> str:
    times = [seconds for trial in trials for seconds in trial.converged_after.values()]
    faults = sum((trial.faults.injected for trial in trials if trial.faults), start=collections.Counter())
    jobs = sum(trial.jobs for trial in trials)
    converged = sum(phase == trial.expected[job] for trial in trials for job, phase in trial.phases.items())
    duplicates = sum(len(trial.duplicates_and_missing()) for trial in trials)
    orphans = sum(len(trial.orphans()) for trial in trials)
    events = sum(len(trial.event_errors()) for trial in trials)
    tracebacks = sum(trial.log.count("Traceback") for trial in trials)
    injected = ", ".join(f"{kind} {count}" for kind, count in sorted(faults.items())) or "none"
    return (f"| {name} | {injected} | {sum(trial.kills for trial in trials)} | {converged}/{jobs} | {duplicates} "
            f"| {orphans} | {events} | {tracebacks} | {statistics.median(times):.1f} / {percentile(times, 0.99):.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--kills", type=int, default=30)
    parser.add_argument("--seed", type=int, default=14)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        def trial(index: int, kills: int, faults: bool) -> Trial:
            folder = Path(scratch) / f"trial-{index}"
            folder.mkdir()
            plan = FaultPlan(seed=options.seed + index) if faults else None
            done = run_trial(Trial(jobs=options.jobs, kills=kills, faults=plan, seed=options.seed + index), folder)
            print(f"trial {index}: {sum(p == done.expected[j] for j, p in done.phases.items())}/{done.jobs} "
                  f"converged, {kills} kills, faults {dict(plan.injected) if plan else {}}", file=sys.stderr)
            return done

        baseline = [trial(0, 0, False)]
        faults_only = [trial(1, 0, True)]
        kills = [min(5, options.kills - done) for done in range(0, options.kills, 5)]
        faulted = [trial(index + 2, count, True) for index, count in enumerate(kills)]
    print("| run | faults injected | kills | jobs converged | children not exactly once | orphans "
          "| jobs with a missing or repeated phase Event | tracebacks | converge p50 / p99 (s) |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(row("no faults", baseline))
    print(row("faults", faults_only))
    print(row("faults and kills", faulted))


if __name__ == "__main__":
    main()
