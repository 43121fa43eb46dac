"""The Client on this machine: each job a background `kubetune run` in <run_dir>/<name>.

What a cluster's API server holds is read from the run's files: status.json (the job with the
status its lifecycle wrote after each tick), events.jsonl, and the pods' log.txt. The client is
the only controller a local run has, so it also does what the operator would: it starts the
run, stops it as Ctrl-C does (suspend, delete), and starts it again (resume: training goes on
from the last complete checkpoint, as running `kubetune run` again does).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Optional

from ..api.models import TERMINAL_PHASES, FineTuneJob, FineTuneJobStatus
from ..api.validation import InvalidJob, Problem, parse_job
from ..lifecycle.conditions import set_condition, timestamp
from ..lifecycle.phases import Phase
from ..local.run import EVENTS_FILE, JOB_FILE, NODES_FILE, STATUS_FILE
from ..render.naming import evaluation_job_name, initializer_job_name, publish_job_name
from ..yamlio import UnreadableYAML, dump_all, load_all
from .errors import ApiError, JobNotFound, RunStopped
from .job import Event, Job, PodState, parse_time, resized
from .roles import STATEFUL_ROLES, done_with_pods, pod_name

SUBMITTED_FILE = "submitted.yaml"  # the job as create() got it
RUN_LOG = "run.log"  # what the background `kubetune run` prints
PID_FILE = "run.pid"
DELETED_FILE = "deleted"  # delete() without remove_files: the files stay, the job is gone
STOP_SECONDS = 60  # how long a stopped run may take to end its pods and exit
FOLLOW_SECONDS = 0.5
# A batch Job's pod here is named after the Job (local.run.LocalBatchJob): <job>-pod.
BATCH_PODS = {"evaluator": lambda name: evaluation_job_name(name, "*"), "initializer": initializer_job_name,
              "publisher": publish_job_name}
# Runs started by this process, by folder: polled so they are reaped, not left as zombies.
_PROCESSES: dict[Path, subprocess.Popen] = {}


def read_job_file(path: Path) -> Optional[FineTuneJob]:
    """The job of a one-job YAML file, or None when it is missing or invalid."""
    try:
        return parse_job(load_all(path.read_bytes())[0])
    except (OSError, UnreadableYAML, InvalidJob, IndexError):
        return None


def scale_run(folder: Path, nodes: int) -> FineTuneJob:
    """What `kubetune scale RUN-DIR N` does: check the change against the running job by the
    rules a cluster applies to it, then ask the run for it. The running job, before the change."""
    running = read_job_file(folder / JOB_FILE)
    if running is None:
        raise JobNotFound(str(folder), f"{folder} ({JOB_FILE} is missing or unreadable)")
    resized(running, nodes)
    (folder / NODES_FILE).write_text(str(nodes))
    return running


def selector_matches(selector: Optional[str], labels: dict[str, str]) -> bool:
    """Equality-based label selectors, as kubectl takes them: a=b, a==b, a!=b, a, !a."""
    for term in filter(None, (t.strip() for t in (selector or "").split(","))):
        key, op, value = (term.partition("!=") if "!=" in term else
                          term.replace("==", "=").partition("=") if "=" in term else (term, "", ""))
        key, value = key.strip(), value.strip()
        if op == "=" and labels.get(key) != value or op == "!=" and labels.get(key) == value or \
                not op and (key[1:] in labels if key.startswith("!") else key not in labels):
            return False
    return True


class LocalBackend:
    namespace: Optional[str] = None

    def __init__(self, run_dir: Path):
        self.root = Path(run_dir).resolve()
        self.where = f"the local runs of {self.root}"

    def folder(self, name: str) -> Path:
        return self.root / name

    # --- the background run -----------------------------------------------------------------

    def _start(self, name: str) -> None:
        """`kubetune run` in its own session: Ctrl-C where the client runs does not reach it."""
        folder = self.folder(name)
        job_file = folder / JOB_FILE if (folder / JOB_FILE).exists() else folder / SUBMITTED_FILE
        # A child inherits an ignored SIGINT (a parent started with nohup), and would not stop on it.
        restore = (lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)) \
            if signal.getsignal(signal.SIGINT) is signal.SIG_IGN else None
        with open(folder / RUN_LOG, "ab") as output:
            process = subprocess.Popen(
                [sys.executable, "-m", "kubetune", "run", str(job_file), "--run-dir", str(folder)],
                stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=restore)
        (folder / PID_FILE).write_text(str(process.pid))
        _PROCESSES[folder] = process

    def running(self, name: str) -> bool:
        """Whether the run's process lives (one this process started, or another's by its pid)."""
        folder = self.folder(name)
        process = _PROCESSES.get(folder)
        if process is not None:
            return process.poll() is None
        try:
            pid = int((folder / PID_FILE).read_text())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return False
        try:  # a pid is reused once its process is gone: is it still this run?
            return str(folder) in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            return True  # no /proc here

    def _stop(self, name: str) -> None:
        """Stop the run as Ctrl-C does: it ends every pod's processes, keeping the checkpoints."""
        if not self.running(name):
            return
        try:
            pid = int((self.folder(name) / PID_FILE).read_text())
            os.killpg(pid, signal.SIGINT)  # the run leads its own process group
        except (OSError, ValueError):
            return
        deadline = time.monotonic() + STOP_SECONDS
        while self.running(name) and time.monotonic() < deadline:
            time.sleep(0.2)
        if self.running(name):
            os.killpg(pid, signal.SIGKILL)

    def _exit_code(self, name: str) -> Optional[int]:
        """The run's exit code, when this process started it."""
        process = _PROCESSES.get(self.folder(name))
        return process.poll() if process is not None else None

    def _output(self, name: str, lines: int = 20) -> str:
        try:
            text = (self.folder(name) / RUN_LOG).read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # --- jobs -------------------------------------------------------------------------------

    def create(self, document: dict[str, Any], job: FineTuneJob) -> Job:
        for path, source in (("spec.model.source", job.spec.model.source),
                             ("spec.dataset.source", job.spec.dataset.source)):
            if source.startswith("job://"):
                raise InvalidJob([Problem(path, f"{source}: job:// sources need the operator; locally, point at "
                                                f"the upstream run's output folder ({self.root}/NAME/output/model)")])
        name, folder = job.metadata.name, self.folder(job.metadata.name)
        if self.running(name):
            raise ApiError(409, "AlreadyExists", f"{name} is running in {folder}")
        if self._exists(name):
            raise ApiError(409, "AlreadyExists", f"{name} exists in {folder}: resume({name!r}) runs it again from its "
                                                 f"last checkpoint; delete({name!r}, remove_files=True) forgets it")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / SUBMITTED_FILE).write_text(dump_all([document]))
        (folder / JOB_FILE).unlink(missing_ok=True)  # a deleted job's: this one runs as submitted
        (folder / DELETED_FILE).unlink(missing_ok=True)
        self._start(name)
        return self.get(name)

    def _exists(self, name: str) -> bool:
        folder = self.folder(name)
        return folder.is_dir() and not (folder / DELETED_FILE).exists() and \
            any((folder / file).exists() for file in (STATUS_FILE, JOB_FILE, SUBMITTED_FILE))

    def get(self, name: str) -> Job:
        if not self._exists(name):
            raise JobNotFound(name, self.where)
        folder = self.folder(name)
        try:
            return Job.from_wire(json.loads((folder / STATUS_FILE).read_text()))
        except (OSError, ValueError):
            pass  # no tick yet
        for file in (JOB_FILE, SUBMITTED_FILE):
            try:
                return Job.from_wire(load_all((folder / file).read_bytes())[0])
            except (OSError, UnreadableYAML, IndexError):
                continue
        raise JobNotFound(name, self.where)

    def list(self, label_selector: Optional[str], all_namespaces: bool) -> list[Job]:
        folders = sorted(path for path in self.root.iterdir() if path.is_dir()) if self.root.is_dir() else []
        jobs = [self.get(folder.name) for folder in folders if self._exists(folder.name)]
        return [job for job in jobs if selector_matches(label_selector, job.metadata.labels)]

    def scale(self, name: str, nodes: int) -> Job:
        job = self.get(name)
        resized(job, nodes)
        deadline = time.monotonic() + STOP_SECONDS
        while self.running(name) and not (self.folder(name) / JOB_FILE).exists() and time.monotonic() < deadline:
            time.sleep(0.2)  # the run is starting: its job file says what it runs
        if not self.running(name):
            raise ApiError(409, "Conflict", f"{name} is not running: scale a local run while it runs (resume it first)")
        scale_run(self.folder(name), nodes)
        return self.get(name)

    def suspend(self, name: str) -> Job:
        """Stop the run as Ctrl-C does, and record it Suspended (as the operator would)."""
        job = self.get(name)
        if not self.running(name):
            raise ApiError(409, "Conflict", f"{name} is not running (phase {job.phase})")
        self._stop(name)
        job = self.get(name)
        if job.phase in TERMINAL_PHASES:
            return job  # it finished meanwhile
        now = datetime.now(timezone.utc)
        checkpoint = job.status.progress.last_checkpoint if job.status and job.status.progress else None
        message = f"stopped by suspend(); resume() goes on from {checkpoint or 'the start: no checkpoint yet'}"
        status = (job.status or FineTuneJobStatus()).model_copy(update={
            "phase": Phase.SUSPENDED.value,
            "conditions": set_condition(job.status.conditions if job.status else [], "Suspended", True, "Suspended",
                                        message, now)})
        self._record(name, job, status, "Suspended", message, now)
        return self.get(name)

    def _record(self, name: str, job: Job, status: Any, reason: str, message: str, now: datetime) -> None:
        """status.json replaced whole and an Event appended, as the run itself writes them."""
        folder = self.folder(name)
        written = folder / f".{STATUS_FILE}.client"
        written.write_text(json.dumps({**job.raw, "status": status.wire()}))
        written.replace(folder / STATUS_FILE)
        with open(folder / EVENTS_FILE, "a") as events:
            events.write(json.dumps({"time": timestamp(now), "type": "Normal", "reason": reason,
                                     "message": message}) + "\n")

    def resume(self, name: str) -> Job:
        self.get(name)
        if not self.running(name):
            self._start(name)
        return self.get(name)

    def delete(self, name: str, wait: bool, remove_files: bool) -> None:
        """Stop the run (as Ctrl-C does); its folder stays, for a later create() to resume from,
        unless remove_files."""
        if not self._exists(name):
            raise JobNotFound(name, self.where)
        self._stop(name)
        if remove_files:
            shutil.rmtree(self.folder(name))
            _PROCESSES.pop(self.folder(name), None)
        else:
            (self.folder(name) / DELETED_FILE).touch()

    # --- waiting ----------------------------------------------------------------------------

    def changes(self, name: str, deadline: Optional[float], poll_interval_s: float) -> Iterator[Job]:
        """The job as status.json says, every poll_interval_s, until the deadline; RunStopped
        when its run ended before it did."""
        while True:
            job = self.get(name)
            if job.phase not in (*TERMINAL_PHASES, Phase.SUSPENDED) and not self.running(name):
                job = self.get(name)  # its last status may have come just before it exited
                if job.phase not in (*TERMINAL_PHASES, Phase.SUSPENDED):
                    raise RunStopped(name, self._exit_code(name), self._output(name))
            yield job
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return
            time.sleep(poll_interval_s if left is None else min(poll_interval_s, left))

    # --- logs, Events, pods -----------------------------------------------------------------

    def _log_file(self, name: str, role: str, ordinal: int) -> Optional[Path]:
        pods = self.folder(name) / "pods"
        if role in STATEFUL_ROLES:
            return pods / pod_name(name, role, ordinal) / "log.txt"
        found = sorted(pods.glob(f"{BATCH_PODS[role](name)}-pod/log.txt"), key=lambda path: path.stat().st_mtime)
        return found[-1] if found else None

    def logs(self, name: str, role: str, ordinal: int, follow: bool, tail_lines: Optional[int],
             previous: bool) -> Iterator[str]:
        """A local pod's log.txt holds every run of its container, one after the other."""
        if previous:
            raise NotImplementedError("a local pod's log.txt holds every run of its container: read it whole")
        self.get(name)
        path = self._log_file(name, role, ordinal)
        if not follow:
            if path is None or not path.exists():
                raise ApiError(404, "NotFound", f"{name} has no {role} pod log yet")
            lines = path.read_text(errors="replace").splitlines()
            yield from lines[-tail_lines:] if tail_lines else [] if tail_lines == 0 else lines
            return
        yield from self._follow(name, role, ordinal, tail_lines)

    def _follow(self, name: str, role: str, ordinal: int, tail_lines: Optional[int]) -> Iterator[str]:
        """tail -f of the pod's log, once it exists, until the run ends or is done with the pod."""
        path, offset, partial = None, 0, b""
        while True:
            done = not self.running(name) or done_with_pods(role, self.get(name).phase)
            path = path or self._log_file(name, role, ordinal)
            if path is not None and path.exists():
                with open(path, "rb") as log:
                    log.seek(offset)
                    data = log.read()
                if data:
                    lines = (partial + data).split(b"\n")
                    partial = lines.pop()
                    if offset == 0 and tail_lines is not None:
                        lines = lines[-tail_lines:] if tail_lines else []
                    offset += len(data)
                    yield from (line.decode(errors="replace") for line in lines)
                    continue
            if done:
                if partial:
                    yield partial.decode(errors="replace")
                return
            time.sleep(FOLLOW_SECONDS)

    def events(self, job: Job) -> list[Event]:
        try:
            lines = (self.folder(job.name) / EVENTS_FILE).read_text().splitlines()
        except OSError:
            return []
        events = [json.loads(line) for line in lines if line.strip()]
        return [Event(parse_time(e.get("time")), e.get("type", "Normal"), e.get("reason", ""), e.get("message", ""))
                for e in events]

    def pods(self, name: str, role: str) -> list[PodState]:
        return []  # a local run keeps no pod status: its status.json says what the operator would
