"""The global batch of a job, and the one an elastic job keeps across resizes.

With `elastic.keepGlobalBatch` the batch is anchored at `maxNodes`, a field that cannot
change, so a resize never makes a valid job invalid: at fewer nodes each rank accumulates
more. It must split into whole accumulation steps at every node count the job may run at.
"""

from __future__ import annotations

from typing import Any, Optional

from .models import FineTuneJobSpec

# transformers' TrainingArguments defaults, which every TRL config class inherits (a test
# checks them against the installed TRL).
TRL_BATCH_DEFAULTS = {"per_device_train_batch_size": 8, "gradient_accumulation_steps": 1}


def _training_int(training: dict[str, Any], key: str) -> int:
    value = training.get(key, TRL_BATCH_DEFAULTS[key])
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 1


def per_device_batch(training: dict[str, Any]) -> int:
    return _training_int(training, "per_device_train_batch_size")


def global_batch_at(spec: FineTuneJobSpec, nodes: int) -> int:
    """Samples per optimizer step at `nodes` worker pods."""
    kept = kept_global_batch(spec)
    if kept is not None:
        return kept
    return (per_device_batch(spec.training) * _training_int(spec.training, "gradient_accumulation_steps")
            * spec.resources.processes * nodes)


def kept_global_batch(spec: FineTuneJobSpec) -> Optional[int]:
    """The global batch an elastic job keeps at every size, or None when it may change."""
    elastic = spec.resources.elastic
    if elastic is None or not elastic.keep_global_batch:
        return None
    return (per_device_batch(spec.training) * _training_int(spec.training, "gradient_accumulation_steps")
            * spec.resources.processes * elastic.max_nodes)


def uneven_split(spec: FineTuneJobSpec) -> Optional[str]:
    """Why the kept global batch does not split into whole accumulation steps at some node count."""
    kept = kept_global_batch(spec)
    elastic = spec.resources.elastic
    if kept is None or elastic is None:
        return None
    per_step = per_device_batch(spec.training) * spec.resources.processes
    uneven = [n for n in range(elastic.min_nodes, elastic.max_nodes + 1) if kept % (per_step * n)]
    if not uneven:
        return None
    return (f"with elastic.keepGlobalBatch the global batch is per_device_train_batch_size "
            f"{per_device_batch(spec.training)} x gradient_accumulation_steps "
            f"{_training_int(spec.training, 'gradient_accumulation_steps')} x {spec.resources.processes} "
            f"process(es) x elastic.maxNodes {elastic.max_nodes} = {kept}, which does not split into whole "
            f"accumulation steps at {', '.join(map(str, uneven))} node(s); choose a gradient_accumulation_steps "
            f"that does, or set elastic.keepGlobalBatch: false")
