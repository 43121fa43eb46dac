"""Run rendered configs and pods on this machine: container paths mapped to folders of a run."""

from pathlib import Path

from kubetune import contract
from kubetune.contract.config import TrainerConfig
from kubetune.api.validation import parse_job
from kubetune.local import pods as local_pods
from kubetune.render import render_job


def rendered_config(document, uid="uid-test"):
    job = parse_job(document)
    job = job.model_copy(update={"metadata": job.metadata.model_copy(update={"uid": uid})})
    objects = render_job(job)
    return objects, TrainerConfig.decode(objects.config_map["data"][contract.CONFIG_FILE])


def map_paths(config: TrainerConfig, root: Path) -> TrainerConfig:
    """The config with /output, /inputs and /etc/kubetune in every string replaced by run folders."""
    return TrainerConfig.model_validate(local_pods.map_paths(config.wire(), local_pods.RunFolders(root).mapping))


def write_local_config(document, root: Path, uid="uid-test"):
    """Render the job, write its ConfigMap files under root/config with local paths; the config."""
    objects, _ = rendered_config(document, uid)
    return objects, local_pods.RunFolders(root).write_config(objects.config_map["data"])


def pod_env(objects, ordinal: int, root: Path, extra=None):
    """The worker container's rendered env for one pod, as a local process gets it: the pod's
    ordinal and name from the downward API, worker DNS names as 127.0.0.1, the job's volumes as
    folders of root (shared by its pods, as a PVC is), /tmp and /cache per pod."""
    stateful_set = objects.stateful_set
    container = stateful_set["spec"]["template"]["spec"]["containers"][0]
    pod_name = f"{stateful_set['metadata']['name']}-{ordinal}"
    fields = local_pods.pod_fields(pod_name, stateful_set["metadata"]["namespace"], ordinal)
    pod_root = root / f"pod-{ordinal}"
    for folder in ("tmp", "cache"):
        (pod_root / folder).mkdir(parents=True, exist_ok=True)
    env = local_pods.container_env(container, fields, local_pods.RunFolders(root), pod_root, pod_root / "cache",
                                   ports={})
    return {**env, **(extra or {})}


def start_pod(objects, ordinal: int, root: Path, log_name: str, extra=None):
    """Start one worker pod's container command as a local process (in its own session)."""
    import os
    import subprocess

    container = objects.stateful_set["spec"]["template"]["spec"]["containers"][0]
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("PET_", "KUBETUNE_CONFIG"))}
    env = {**inherited, **pod_env(objects, ordinal, root, extra)}
    # Compiled DeepSpeed ops are shared by the pods of a test run, as a node's cache would be.
    if "TORCH_EXTENSIONS_DIR" in inherited:
        env["TORCH_EXTENSIONS_DIR"] = inherited["TORCH_EXTENSIONS_DIR"]
    env[contract.ENV_TERMINATION_LOG] = str(root / f"pod-{ordinal}" / "termination-log")
    log = open(root / log_name, "w")
    return subprocess.Popen(local_pods.command_of(container), env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def wait_all(processes, timeout):
    """Exit codes; every process still running at the timeout is killed (a lone rank waits forever)."""
    import subprocess
    import time

    deadline = time.monotonic() + timeout
    codes = []
    try:
        for process in processes:
            codes.append(process.wait(timeout=max(deadline - time.monotonic(), 1)))
    except subprocess.TimeoutExpired:
        for process in processes:
            kill_pod(process)
        raise
    return codes


def kill_pod(process):
    local_pods.kill_tree(process)


def freeze_pod(pod_name: str) -> list[int]:
    """SIGSTOP every process of a local pod (found by the POD_NAME its env carries): a rank that
    hangs without exiting, as a deadlocked collective or a wedged GPU leaves it."""
    import signal

    import psutil

    frozen = []
    for process in psutil.process_iter():
        try:
            if process.environ().get("POD_NAME") == pod_name:
                process.send_signal(signal.SIGSTOP)
                frozen.append(process.pid)
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    assert frozen, f"no process of {pod_name}"
    return frozen
