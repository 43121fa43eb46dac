"""What the operator side and the pod runtime agree on, defined once.

The pod runtime (trainer_entrypoint) may import this package and nothing else of kubetune;
kubetune imports nothing of the runtime (a test enforces both). It holds:

- paths, ports, exit codes and env names, with the env a user may not set (`pod`);
- one table each for the lists that grow: methods, data formats, metrics, source schemes;
- the typed documents that cross from one side to the other, each with one encode and one
  decode: the trainer config (`TrainerConfig`), rank 0's progress (`Progress`), the
  evaluation summary (`EvaluationSummary`), the evaluation report (`EvaluationReport`) and the
  completion record (`CompletionRecord`);
- the settings a user writes and a pod reads (model, dataset, LoRA, strategy, sampling, gates,
  publish targets), with their defaults: the spec models derive from them.

It imports pydantic and the standard library only, so both images can use it.
"""

from .pod import (
    CACHE_DIR,
    CHECKPOINTS_SUBDIR,
    COMPLETION_RECORD,
    CONFIG_DIR,
    CONFIG_FILE,
    DEEPSPEED_FILE,
    ENV_CONFIG,
    ENV_BUILTIN_DIR,
    ENV_GENERATION_PORT,
    ENV_METRICS_PORT,
    ENV_FAILURE_FILE,
    ENV_TERMINATION_LOG,
    EVALUATION_SUBDIR,
    EXIT_PERMANENT,
    EXIT_SUCCESS,
    GENERATION_GROUP_PORT,
    GENERATION_PORT,
    INPUTS_DIR,
    MASTER_PORT,
    METRICS_PORT,
    MODEL_CACHE_DIR,
    MODEL_SUBDIR,
    OUTPUT_DIR,
    PUBLISH_DIR,
    RENDEZVOUS_PORT,
    SHM_DIR,
    TERMINATION_MESSAGE_LIMIT,
    TMP_DIR,
)

__all__ = [
    "CACHE_DIR", "CHECKPOINTS_SUBDIR", "COMPLETION_RECORD", "CONFIG_DIR", "CONFIG_FILE", "DEEPSPEED_FILE",
    "ENV_BUILTIN_DIR", "ENV_CONFIG", "ENV_GENERATION_PORT", "ENV_METRICS_PORT", "ENV_FAILURE_FILE",
    "ENV_TERMINATION_LOG", "EVALUATION_SUBDIR", "EXIT_PERMANENT", "EXIT_SUCCESS", "GENERATION_GROUP_PORT", "GENERATION_PORT", "INPUTS_DIR",
    "MASTER_PORT", "METRICS_PORT", "MODEL_CACHE_DIR", "MODEL_SUBDIR", "OUTPUT_DIR", "PUBLISH_DIR", "RENDEZVOUS_PORT", "SHM_DIR",
    "TERMINATION_MESSAGE_LIMIT", "TMP_DIR",
]
