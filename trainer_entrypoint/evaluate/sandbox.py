"""Run model-written programs in a child process with time, memory and network limits.

Each program runs in a fresh session (so a timeout kills everything it started), in an empty
working folder, with an empty environment (no tokens or credentials reach it), under
RLIMIT_AS / RLIMIT_CPU / RLIMIT_FSIZE, and without network: in a new network namespace where
the kernel lets an unprivileged process make one, otherwise with Python's socket module
disabled inside the program.
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional

MEMORY_LIMIT_BYTES = 2 * 1024**3
OUTPUT_LIMIT_BYTES = 1024**2
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
# Prepended when no network namespace is available: the program sees no working socket.
SOCKET_GUARD = """\
def _kubetune_no_network():
    import socket
    def refuse(*args, **kwargs):
        raise OSError("network access is disabled during evaluation")
    socket.socket = refuse
    socket.create_connection = refuse
    socket.getaddrinfo = refuse
_kubetune_no_network()
del _kubetune_no_network
"""


@dataclass(frozen=True)
class Outcome:
    returncode: Optional[int]  # None when the time limit killed it
    stdout: str
    stderr: str

    @property
    def timed_out(self) -> bool:
        return self.returncode is None


def _limit_resources(timeout: float) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT_BYTES, MEMORY_LIMIT_BYTES))
    cpu_seconds = int(timeout) + 1
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds))
    resource.setrlimit(resource.RLIMIT_FSIZE, (OUTPUT_LIMIT_BYTES * 16, OUTPUT_LIMIT_BYTES * 16))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _leave_network() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWUSER | CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "unshare")


@lru_cache(maxsize=1)
def network_namespaces_work() -> bool:
    """Whether this kernel and container let an unprivileged process drop its network."""
    try:
        subprocess.run([sys.executable, "-c", "pass"], preexec_fn=_leave_network, check=True,
                       capture_output=True, timeout=30)
        return True
    except (subprocess.SubprocessError, OSError):
        return False


def isolation() -> str:
    return "network-namespace" if network_namespaces_work() else "python-socket-guard"


def run_program(source: str, stdin: str = "", timeout: float = 10.0) -> Outcome:
    """Run a Python program; stdout and stderr are capped, the whole process group is killed on timeout."""
    isolated = network_namespaces_work()
    program = source if isolated else SOCKET_GUARD + source

    def prepare_child() -> None:
        if isolated:
            _leave_network()
        _limit_resources(timeout)

    with tempfile.TemporaryDirectory(prefix="kubetune-sample-") as folder:
        path = os.path.join(folder, "program.py")
        with open(path, "w") as handle:
            handle.write(program)
        process = subprocess.Popen(
            [sys.executable, "-I", "-B", path], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, cwd=folder, env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
            start_new_session=True, preexec_fn=prepare_child,
        )
        try:
            stdout, stderr = process.communicate(stdin.encode(), timeout=timeout)
            returncode: Optional[int] = process.returncode
        except subprocess.TimeoutExpired:
            returncode = None
            _kill_group(process)
            stdout, stderr = process.communicate()
        finally:
            _kill_group(process)  # children it left behind
    return Outcome(returncode, _text(stdout), _text(stderr))


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _text(data: bytes) -> str:
    return data[:OUTPUT_LIMIT_BYTES].decode("utf-8", errors="replace")
