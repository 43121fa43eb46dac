"""An elastic job resized while `kubetune run` trains it: started on 2 nodes, scaled with
`kubetune scale` to 1 after a checkpoint, and back to 2 once a checkpoint was saved at 1.
tests/test_elastic.py checks the result in CI; bench/elastic.py times each resize."""

import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import yaml

KUBETUNE = str(Path(sys.executable).parent / "kubetune")
STEP = re.compile(rb"(\d+)/(\d+) \[")  # the training progress bar
NAME = "elastic"


def elastic_job(folder: Path, strategy: str, max_steps: int, logging_steps: int) -> Path:
    """An SFT job of the built-in tiny model that may run on 1 or 2 nodes, keeping its global batch."""
    document = {
        "apiVersion": "kubetune.io/v1alpha1", "kind": "FineTuneJob",
        "metadata": {"name": NAME, "namespace": "ml"},
        "spec": {
            "model": {"source": "builtin://tiny"}, "dataset": {"source": "builtin://tiny"},
            "training": {"max_steps": max_steps, "per_device_train_batch_size": 8, "max_length": 128,
                         "logging_steps": logging_steps, "learning_rate": 1.0e-3},
            "resources": {"nodes": 2, "elastic": {"minNodes": 1, "maxNodes": 2}},
            "distributed": {"strategy": strategy},
            "checkpointing": {"everySteps": 20, "keep": 2},
            "evaluation": {"enabled": False},
        },
    }
    path = folder / f"{NAME}-{strategy}.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


@dataclass
class Resize:
    nodes: int
    asked_at: float  # time.monotonic() when `kubetune scale` was run
    last_step: Optional[int] = None  # the last step trained at the old size
    resumed_from: Optional[int] = None  # the checkpoint training went on from
    first_step_at: Optional[float] = None  # when the first step at the new size was logged


@dataclass
class Trial:
    returncode: Optional[int] = None
    output: str = ""
    resizes: list[Resize] = field(default_factory=list)
    run_dir: Path = Path()

    @property
    def worker_log(self) -> str:
        return (self.run_dir / "pods" / f"{NAME}-worker-0" / "log.txt").read_text(errors="replace")

    def log_history(self) -> list[dict]:
        """What training logged, as the final checkpoint holds it: every step, across resumes."""
        final = sorted((self.run_dir / "output" / "checkpoints").glob("checkpoint-*/trainer_state.json"),
                       key=lambda p: int(p.parent.name.split("-")[1]))[-1]
        return json.loads(final.read_text())["log_history"]


class Log:
    """A pod's log, read as it grows."""

    def __init__(self, path: Path):
        self.path, self.text = path, b""

    def read(self) -> bytes:
        if self.path.exists():
            self.text = self.path.read_bytes()
        return self.text


def last_training_step(text: bytes) -> Optional[int]:
    """The step the training progress bar last showed (the bar with the most steps; loading and
    saving draw bars of their own)."""
    found = [(int(step), int(total)) for step, total in STEP.findall(text)]
    longest = max((total for _, total in found), default=None)
    return next((step for step, total in reversed(found) if total == longest), None)


def newest_checkpoint(run_dir: Path) -> int:
    steps = [int(p.parent.name.split("-")[1])
             for p in (run_dir / "output" / "checkpoints").glob("checkpoint-*/trainer_state.json")]
    return max(steps, default=0)


def wait_for(condition, process: subprocess.Popen, deadline: float, poll: float = 0.1):
    while True:
        value = condition()
        if value:
            return value
        if process.poll() is not None or time.monotonic() > deadline:
            raise TimeoutError("the run ended or timed out while waiting")
        time.sleep(poll)


def _resize(run_dir: Path, nodes: int, log: Log, trial: Trial, process: subprocess.Popen, deadline: float) -> None:
    resize = Resize(nodes, time.monotonic())
    subprocess.run([KUBETUNE, "scale", str(run_dir), str(nodes)], check=True, capture_output=True, timeout=60)
    trial.resizes.append(resize)
    marker = f"resuming on {nodes}:".encode()
    start = wait_for(lambda: log.read().rfind(marker) + 1, process, deadline)
    resumed = re.search(rb"checkpoint-(\d+) was saved by", log.text[log.text.rfind(b"\n", 0, start) + 1:])
    resize.resumed_from = int(resumed.group(1)) if resumed else None
    resize.last_step = last_training_step(log.text[:start])
    wait_for(lambda: b"{'loss'" in log.read()[start:], process, deadline, poll=0.05)
    resize.first_step_at = time.monotonic()


def run_trial(job_file: Path, run_dir: Path, timeout: float = 900) -> Trial:
    """2 nodes → 1 after checkpoint 40 → 2 once a checkpoint was saved at 1 → to the end."""
    trial = Trial(run_dir=run_dir)
    deadline = time.monotonic() + timeout
    log = Log(run_dir / "pods" / f"{NAME}-worker-0" / "log.txt")
    process = subprocess.Popen([KUBETUNE, "run", str(job_file), "--run-dir", str(run_dir)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: newest_checkpoint(run_dir) >= 40, process, deadline)
        _resize(run_dir, 1, log, trial, process, deadline)
        resumed = trial.resizes[-1].resumed_from or 0
        wait_for(lambda: newest_checkpoint(run_dir) > resumed, process, deadline, poll=0.05)
        _resize(run_dir, 2, log, trial, process, deadline)
        trial.output, _ = process.communicate(timeout=max(deadline - time.monotonic(), 1))
    except (TimeoutError, subprocess.TimeoutExpired):
        process.kill()
        trial.output = process.communicate()[0]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    trial.returncode = process.returncode
    return trial
