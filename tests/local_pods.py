"""Run rendered configs and pods on this machine: container paths mapped to folders of a run."""

import copy
import json
from pathlib import Path

from kubetune import contract
from kubetune.api.validation import parse_job
from kubetune.local import pods as local_pods
from kubetune.render import render_job


def rendered_config(document, uid="uid-test"):
    job = parse_job(document)
    job = job.model_copy(update={"metadata": job.metadata.model_copy(update={"uid": uid})})
    objects = render_job(job)
    return objects, json.loads(objects.config_map["data"][contract.CONFIG_FILE])


def map_paths(value, root: Path):
    """Replace /output, /inputs and /etc/kubetune in every string of the config with run folders."""
    return local_pods.map_paths(value, local_pods.RunFolders(root).mapping)


def write_local_config(document, root: Path, uid="uid-test"):
    """Render the job, write its ConfigMap files under root/config with local paths; the config."""
    objects, config = rendered_config(document, uid)
    (root / "config").mkdir(parents=True, exist_ok=True)
    (root / "output").mkdir(parents=True, exist_ok=True)
    for name, text in objects.config_map["data"].items():
        data = map_paths(json.loads(text), root)
        (root / "config" / name).write_text(json.dumps(data, indent=2))
    return objects, json.loads((root / "config" / contract.CONFIG_FILE).read_text())


def pod_env(objects, ordinal: int, root: Path, extra=None):
    """The worker container's rendered env for one pod, as a local process gets it: the pod's
    ordinal and name from the downward API, worker DNS names as 127.0.0.1, the job's volumes as
    folders of root (shared by its pods, as a PVC is), /tmp and /cache per pod."""
    stateful_set = objects.stateful_set
    container = stateful_set["spec"]["template"]["spec"]["containers"][0]
    pod_name = f"{stateful_set['metadata']['name']}-{ordinal}"
    fields = {
        "metadata.name": pod_name,
        "metadata.namespace": stateful_set["metadata"]["namespace"],
        "metadata.labels['apps.kubernetes.io/pod-index']": str(ordinal),
    }
    env = {}
    for item in container["env"]:
        if "value" in item:
            value = item["value"]
            host, _, port = value.partition(":")
            if host.endswith(".svc"):
                value = "127.0.0.1" + (f":{port}" if port else "")
            env[item["name"]] = map_paths(value, root)
        else:
            env[item["name"]] = fields[item["valueFrom"]["fieldRef"]["fieldPath"]]
    pod_root = root / f"pod-{ordinal}"
    for folder in ("tmp", "cache"):
        (pod_root / folder).mkdir(parents=True, exist_ok=True)
    env["HOME"] = env["TMPDIR"] = str(pod_root / "tmp")
    env = {name: value.replace(contract.CACHE_DIR, str(pod_root / "cache"), 1)
           if value.startswith(contract.CACHE_DIR + "/") else value for name, value in env.items()}
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
    env["KUBETUNE_TERMINATION_LOG"] = str(root / f"pod-{ordinal}" / "termination-log")
    log = open(root / log_name, "w")
    command = [env_python()] + container["command"][1:] if container["command"][0] == "python" else container["command"]
    return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def env_python():
    import sys

    return sys.executable



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
