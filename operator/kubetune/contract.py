"""What the operator's pods and the trainer entrypoint agree on: paths, ports, exit codes.

Rendering writes these into pod specs; trainer_entrypoint reads them back from the env.
Kept free of imports so both sides can use it.
"""

CONFIG_DIR = "/etc/kubetune"
CONFIG_FILE = "config.json"
DEEPSPEED_FILE = "deepspeed.json"
OUTPUT_DIR = "/output"
CACHE_DIR = "/cache"
INPUTS_DIR = "/inputs"
TMP_DIR = "/tmp"
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

# Exit codes of `python -m trainer_entrypoint ...`.
EXIT_SUCCESS = 0
# Configuration, data or model errors: retrying cannot help; the reason is in the
# termination message file.
EXIT_PERMANENT = 3
# Anything else (crash, OOM kill, lost peer) is retryable.

ENV_CONFIG = "KUBETUNE_CONFIG"
ENV_METRICS_PORT = "KUBETUNE_METRICS_PORT"
