"""Paths, ports, exit codes and env names that pod specs and the pod runtime share."""

from __future__ import annotations

CONFIG_DIR = "/etc/kubetune"
CONFIG_FILE = "config.json"
DEEPSPEED_FILE = "deepspeed.json"
OUTPUT_DIR = "/output"
CACHE_DIR = "/cache"
INPUTS_DIR = "/inputs"
PUBLISH_DIR = "/publish"  # the publish Job mounts each pvc:// target claim at PUBLISH_DIR/<claim>
TMP_DIR = "/tmp"
# The model and data cache the initializer fills (read-only in the other pods).
MODEL_CACHE_DIR = "/model-cache"
SHM_DIR = "/dev/shm"

# Inside the output folder.
CHECKPOINTS_SUBDIR = "checkpoints"
MODEL_SUBDIR = "model"
COMPLETION_RECORD = "COMPLETED.json"
EVALUATION_SUBDIR = "evaluation"

MASTER_PORT = 29500
RENDEZVOUS_PORT = 29400
# Rank 0 serves Prometheus metrics on /metrics and its progress as JSON on /progress.
METRICS_PORT = 9470
# The generation server (spec.generation, TRL's vllm_mode server): vLLM's HTTP API, and the port
# rank 0 opens for the NCCL group that pushes new weights to it (TRL's vllm_group_port default).
GENERATION_PORT = 8000
GENERATION_GROUP_PORT = 51216

# Exit codes of `python -m trainer_entrypoint ...`.
EXIT_SUCCESS = 0
# Configuration, data or model errors: retrying cannot help; the reason is in the
# termination message file.
EXIT_PERMANENT = 3
# Anything else (crash, OOM kill, lost peer) is retryable.
# Kubernetes keeps at most 4096 bytes of a container's termination message.
TERMINATION_MESSAGE_LIMIT = 4000

# --- env ---------------------------------------------------------------------------------

ENV_CONFIG = "KUBETUNE_CONFIG"
ENV_METRICS_PORT = "KUBETUNE_METRICS_PORT"
ENV_GENERATION_PORT = "KUBETUNE_GENERATION_PORT"
# Where the runtime writes its termination message (Kubernetes reads /dev/termination-log).
ENV_TERMINATION_LOG = "KUBETUNE_TERMINATION_LOG"
# Set by the launcher for its ranks: where a rank leaves its failure report.
ENV_FAILURE_FILE = "KUBETUNE_FAILURE_FILE"
# Folder of builtin://tiny (defaults to a folder under HF_HOME).
ENV_BUILTIN_DIR = "KUBETUNE_BUILTIN_DIR"

# What a job's own env (spec.resources.env) may not set: the rendezvous env, what torchrun
# gives each rank, and kubetune's own variables.
RESERVED_ENV_PREFIXES = ("PET_", "KUBETUNE_", "TORCHELASTIC_")
RESERVED_ENV_NAMES = (
    "MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "NODE_RANK", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK",
)
