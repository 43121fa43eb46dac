"""`python -m trainer_entrypoint train`: the worker pod's main process.

It refuses to train twice (a StatefulSet restarts pods even after success), starts torchrun
with the PET_* rendezvous env the pod was given, passes its output through while keeping the
last lines, and on failure leaves the pod's termination message: the failing rank's own
report (not torchrun's ChildFailedError) with those lines, and exit code 3 when no retry can
fix it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections import deque
from pathlib import Path
from typing import Iterable

from kubetune import contract
from kubetune.contract.config import TrainerConfig
from kubetune.contract.failure import LAST_LOG_LINES, FailureReport
from kubetune.contract.output import CompletionRecord

from ..config import load_config
from ..errors import exit_code_for, write_termination_message


def worker_command(config: TrainerConfig) -> list[str]:
    """torchrun, which takes --nnodes, --node-rank, --master-addr ... from PET_* in the env; or,
    for one process on one node without DeepSpeed, the worker alone: a one-rank process group
    only adds a DDP wrapper and its all-reduce to every step."""
    single = os.environ.get("PET_NNODES", "1") == "1" and os.environ.get("PET_NPROC_PER_NODE", "1") == "1"
    if single and not config.training.get("deepspeed"):
        return [sys.executable, "-m", "trainer_entrypoint", "worker"]
    return [sys.executable, "-m", "torch.distributed.run", "--module", "trainer_entrypoint", "worker"]


def pass_through(lines: Iterable[bytes], keep: int = LAST_LOG_LINES) -> str:
    """Write each line to this process's output; the last `keep` lines."""
    tail: deque[str] = deque(maxlen=keep)
    for line in lines:
        sys.stdout.buffer.write(line)
        sys.stdout.buffer.flush()
        tail.append(line.decode(errors="replace"))
    return "".join(tail)


def failure_report(report_file: Path, code: int, logs: str) -> FailureReport:
    """The failing rank's report when it left one; else what torchrun's output shows."""
    report = FailureReport.read(report_file.read_text()) if report_file.exists() else None
    if report is None:
        return FailureReport.from_logs(logs, code)
    return report.model_copy(update={"last_logs": logs or None})


def main() -> int:
    try:
        config = load_config()
    except Exception as error:
        return exit_code_for(error) or 1
    record = CompletionRecord.read(Path(config.output.completion_record), config.job.uid)
    if record:
        print(f"kubetune: {config.job.name} already finished training at step {record.global_step}; "
              "not training again", flush=True)
        return contract.EXIT_SUCCESS
    with tempfile.TemporaryDirectory(prefix="kubetune-launch-") as scratch:
        report_file = Path(scratch) / "failure.json"
        env = {**os.environ, contract.ENV_FAILURE_FILE: str(report_file)}
        child = subprocess.Popen(worker_command(config), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda number, _frame: child.send_signal(number))
        logs = pass_through(iter(child.stdout.readline, b""))
        code = child.wait()
        if code == 0:
            return contract.EXIT_SUCCESS
        report = failure_report(report_file, code, logs)
    write_termination_message(report.fitted())
    if report.reason == "PermanentError":
        return contract.EXIT_PERMANENT
    print(f"kubetune: training failed ({report.reason}, exit code {code}); the pod will be restarted and resume",
          flush=True)
    return code if code > 0 else 128 - code
