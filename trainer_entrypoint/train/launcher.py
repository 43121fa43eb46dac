"""`python -m trainer_entrypoint train`: the worker pod's main process.

It refuses to train twice (a StatefulSet restarts pods even after success), starts torchrun
with the PET_* rendezvous env the pod was given, and turns a rank's permanent error into the
pod's exit code and termination message.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from kubetune import contract
from kubetune.contract.config import TrainerConfig
from kubetune.contract.output import CompletionRecord

from ..config import load_config
from ..errors import PermanentError, record_permanent_error, write_termination_message


def worker_command(config: TrainerConfig) -> list[str]:
    """torchrun, which takes --nnodes, --node-rank, --master-addr ... from PET_* in the env; or,
    for one process on one node without DeepSpeed, the worker alone: a one-rank process group
    only adds a DDP wrapper and its all-reduce to every step."""
    single = os.environ.get("PET_NNODES", "1") == "1" and os.environ.get("PET_NPROC_PER_NODE", "1") == "1"
    if single and not config.training.get("deepspeed"):
        return [sys.executable, "-m", "trainer_entrypoint", "worker"]
    return [sys.executable, "-m", "torch.distributed.run", "--module", "trainer_entrypoint", "worker"]


def main() -> int:
    try:
        config = load_config()
    except PermanentError as error:
        return record_permanent_error(error)
    record = CompletionRecord.read(Path(config.output.completion_record), config.job.uid)
    if record:
        print(f"kubetune: {config.job.name} already finished training at step {record.global_step}; "
              "not training again", flush=True)
        return contract.EXIT_SUCCESS
    with tempfile.TemporaryDirectory(prefix="kubetune-launch-") as scratch:
        marker = Path(scratch) / "permanent-error"
        env = {**os.environ, contract.ENV_PERMANENT_ERROR_FILE: str(marker)}
        child = subprocess.Popen(worker_command(config), env=env)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda number, _frame: child.send_signal(number))
        code = child.wait()
        if marker.exists():
            write_termination_message(marker.read_text())
            return contract.EXIT_PERMANENT
    if code == 0:
        return contract.EXIT_SUCCESS
    print(f"kubetune: training exited with {code}; the pod will be restarted and resume", flush=True)
    return code if code > 0 else 128 - code
