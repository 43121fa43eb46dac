"""Rendered pod templates run as local processes: one machine plays every node.

Container paths of the job's volumes become folders of a run directory, pod DNS names become
127.0.0.1, the ports pods would each have to themselves become free local ports, and the
downward API is filled in from the pod's name and ordinal.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

from .. import contract
from ..contract.config import TrainerConfig
from ..render.naming import POD_INDEX_LABEL

# Env variables whose value is a bare port number of the workers' Service.
PORT_VARIABLES = ("PET_MASTER_PORT", "MASTER_PORT", contract.ENV_GENERATION_PORT)
# The TRL keys that point the ranks at the generation server (render.generation).
SERVER_HOST_KEY, SERVER_PORT_KEYS = "vllm_server_host", ("vllm_server_port", "vllm_group_port")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass(frozen=True)
class RunFolders:
    """Where a job's volumes live on this machine."""

    root: Path
    # The model and data cache every local run shares (the cache claim of a cluster).
    model_cache: Optional[Path] = None

    @property
    def mapping(self) -> dict[str, str]:
        return {
            contract.MODEL_CACHE_DIR: str(self.model_cache or self.root / "model-cache"),
            contract.OUTPUT_DIR: str(self.root / "output"),
            contract.INPUTS_DIR: str(self.root / "inputs"),
            contract.CONFIG_DIR: str(self.root / "config"),
            contract.PUBLISH_DIR: str(self.root / "publish"),  # pvc:// publish targets, by claim
        }

    def pod(self, name: str) -> Path:
        folder = self.root / "pods" / name
        (folder / "tmp").mkdir(parents=True, exist_ok=True)
        return folder

    def write_config(self, config_map_data: Mapping[str, str],
                     ports: Optional[Mapping[int, int]] = None) -> TrainerConfig:
        """The ConfigMap's files under config/ with container paths turned into these folders and
        Service addresses into local ones; the trainer config."""
        (self.root / "config").mkdir(parents=True, exist_ok=True)
        (self.root / "output").mkdir(parents=True, exist_ok=True)
        files = {name: map_paths(json.loads(text), self.mapping) for name, text in config_map_data.items()}
        local_server_address(files[contract.CONFIG_FILE]["training"], ports or {})
        for name, data in files.items():
            (self.root / "config" / name).write_text(json.dumps(data, indent=2))
        return TrainerConfig.model_validate(files[contract.CONFIG_FILE])


def local_ports() -> dict[int, int]:
    """The Service ports (the workers', the generation server's), each as a free port of this machine."""
    return {port: free_port() for port in (contract.MASTER_PORT, contract.RENDEZVOUS_PORT, contract.GENERATION_PORT,
                                           contract.GENERATION_GROUP_PORT)}


def local_server_address(training: dict[str, Any], ports: Mapping[int, int]) -> None:
    """The generation server's Service address in the TRL keys, as this machine's."""
    if SERVER_HOST_KEY in training:
        training[SERVER_HOST_KEY] = local_address(training[SERVER_HOST_KEY], ports)
    for key in SERVER_PORT_KEYS:
        if key in training:
            training[key] = ports.get(training[key], training[key])


def map_paths(value: Any, mapping: Mapping[str, str]) -> Any:
    """Every string in value that starts with a container path, rewritten to its local folder."""
    if isinstance(value, str):
        for container_path, local in mapping.items():
            if value == container_path or value.startswith(container_path + "/"):
                return local + value[len(container_path):]
        return value
    if isinstance(value, list):
        return [map_paths(v, mapping) for v in value]
    if isinstance(value, dict):
        return {k: map_paths(v, mapping) for k, v in value.items()}
    return value


def local_address(value: str, ports: Mapping[int, int]) -> str:
    """<pod>.<service>.<ns>.svc[:port] -> 127.0.0.1[:local port]."""
    host, _, port = value.partition(":")
    if not host.endswith(".svc"):
        return value
    return "127.0.0.1" + (f":{ports.get(int(port), port)}" if port else "")


def container_env(container: Mapping[str, Any], fields: Mapping[str, str], folders: RunFolders,
                  pod_folder: Path, cache: Path, ports: Mapping[int, int]) -> dict[str, str]:
    """The container's env as a local process gets it."""
    env: dict[str, str] = {}
    mapping = {**folders.mapping, contract.CACHE_DIR: str(cache), contract.TMP_DIR: str(pod_folder / "tmp")}
    for item in container.get("env", []):
        name = item["name"]
        if "value" in item:
            value = local_address(item["value"], ports)
            if name in PORT_VARIABLES:
                value = str(ports.get(int(value), value))
            env[name] = map_paths(value, mapping)
        elif "fieldRef" in item.get("valueFrom", {}):
            env[name] = fields[item["valueFrom"]["fieldRef"]["fieldPath"]]
    env["TMPDIR"] = str(pod_folder / "tmp")
    return env


def pod_fields(name: str, namespace: str, ordinal: Optional[int]) -> dict[str, str]:
    fields = {"metadata.name": name, "metadata.namespace": namespace}
    if ordinal is not None:
        fields[f"metadata.labels['{POD_INDEX_LABEL}']"] = str(ordinal)
    return fields


def command_of(container: Mapping[str, Any]) -> list[str]:
    """The container command, with `python` meaning this interpreter (the image's Python here)."""
    command = list(container["command"]) + list(container.get("args", []))
    return [sys.executable] + command[1:] if command[0] == "python" else command


@dataclass
class LocalPod:
    """One pod's container as a process; its restarts and last termination, as a kubelet keeps them."""

    name: str
    command: list[str]
    env: dict[str, str]
    folder: Path
    uid: str = field(default_factory=lambda: str(uuid.uuid4()))  # a new pod, as a controller recreates one
    process: Optional[subprocess.Popen] = None
    restarts: int = 0
    exit_code: Optional[int] = None
    last_exit: Optional[tuple[int, str]] = None
    # The readiness probe's URL here, when the container has an HTTP one.
    readiness_url: Optional[str] = None

    @property
    def termination_log(self) -> Path:
        return self.folder / "termination-log"

    @property
    def log_file(self) -> Path:
        return self.folder / "log.txt"

    def start(self) -> None:
        if self.process is not None:
            self.last_exit = (self.exit_code or 0, self.termination_message())
            self.restarts += 1
        self.termination_log.unlink(missing_ok=True)
        self.exit_code = None
        env = {**os.environ, **self.env, contract.ENV_TERMINATION_LOG: str(self.termination_log)}
        with open(self.log_file, "a") as log:
            self.process = subprocess.Popen(self.command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)

    def poll(self) -> Optional[int]:
        """The exit code once the process has ended."""
        if self.process is not None and self.exit_code is None:
            self.exit_code = self.process.poll()
        return self.exit_code

    @property
    def running(self) -> bool:
        return self.process is not None and self.poll() is None

    @property
    def ready(self) -> bool:
        """Running, and answering its readiness probe when it has one (as the kubelet checks)."""
        if not self.running or self.readiness_url is None:
            return self.running
        try:
            with urllib.request.urlopen(self.readiness_url, timeout=0.5) as reply:
                return reply.status == 200
        except OSError:
            return False

    def termination_message(self) -> str:
        return self.termination_log.read_text() if self.termination_log.exists() else ""

    def last_log_lines(self, count: int = 20) -> str:
        if not self.log_file.exists():
            return ""
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-count:])

    def kill(self) -> None:
        if self.process is not None:
            kill_tree(self.process)
            self.poll()


def kill_tree(process: subprocess.Popen) -> None:
    """SIGKILL a pod's whole process tree, as the kubelet does by killing the container's cgroup.

    torchrun starts its workers in sessions of their own, so killing the process group of the
    pod's main process would leave them training."""
    import psutil

    try:
        tree = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        tree = []
    for member in [process] + tree:
        try:
            member.kill()
        except (psutil.NoSuchProcess, ProcessLookupError):
            pass
    process.wait()


def local_pod(template_spec: Mapping[str, Any], name: str, namespace: str, ordinal: Optional[int],
              folders: RunFolders, cache: Path, ports: Mapping[int, int]) -> LocalPod:
    """A LocalPod for the first container of a rendered pod template; its progress endpoint on
    a port of its own (pods share this machine's network)."""
    container = template_spec["containers"][0]
    folder = folders.pod(name)
    env = container_env(container, pod_fields(name, namespace, ordinal), folders, folder, cache, ports)
    env[contract.ENV_METRICS_PORT] = str(free_port())
    return LocalPod(name, command_of(container), env, folder, readiness_url=readiness_url(container, ports))


def readiness_url(container: Mapping[str, Any], ports: Mapping[int, int]) -> Optional[str]:
    """The container's HTTP readiness probe as a local URL (its named port mapped like the Service's)."""
    probe = (container.get("readinessProbe") or {}).get("httpGet")
    if not probe:
        return None
    named = {port["name"]: port["containerPort"] for port in container.get("ports", [])}
    port = named.get(probe["port"], probe["port"])
    return f"http://127.0.0.1:{ports.get(port, port)}{probe.get('path', '/')}"
