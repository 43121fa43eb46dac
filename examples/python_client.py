"""A FineTuneJob from Python: built as typed objects (no YAML), run to the end, its evaluation printed.

    python examples/python_client.py

It runs on this machine (a background `kubetune run` in kubetune-runs/python-client: SFT of
the built-in tiny model on two local worker "nodes", about a minute on 2 CPU cores). The same
lines drive a cluster with the operator installed: swap the two `client =` lines.
"""

from kubetune import Client, FineTuneJob, JobFailed
from kubetune.api.models import (
    CheckpointingSpec,
    DatasetSpec,
    EvaluationSpec,
    FineTuneJobSpec,
    ModelSpec,
    ObjectMeta,
    ResourcesSpec,
    SamplingSpec,
)

job = FineTuneJob(
    metadata=ObjectMeta(name="python-client"),
    spec=FineTuneJobSpec(
        method="sft",
        model=ModelSpec(source="builtin://tiny"),
        dataset=DatasetSpec(source="builtin://tiny", split="train", eval_split="test"),
        training={  # SFTConfig keys, as in a TRL sft_config.yaml
            "max_steps": 40,
            "per_device_train_batch_size": 8,
            "learning_rate": 1.0e-3,
            "lr_scheduler_type": "cosine",
            "warmup_steps": 4,
            "logging_steps": 5,
            "max_length": 128,
        },
        resources=ResourcesSpec(nodes=2, gpus_per_node=0),  # CPU: one training process per node
        checkpointing=CheckpointingSpec(every_steps=20, keep=2),
        evaluation=EvaluationSpec(engine="transformers", metrics=["loss", "perplexity", "exact_match"],
                                  sampling=SamplingSpec(n=1, temperature=0.0, max_tokens=32), compare_base=True),
    ),
)

client = Client.local("kubetune-runs")
# client = Client()  # a cluster: the kubeconfig's current context and namespace (or Client(namespace="ml"))


def show(current):
    """Called on every change of phase or progress (in a notebook a progress bar shows too)."""
    progress = current.status.progress if current.status else None
    training = f"step {progress.step}/{progress.total_steps}, loss {progress.loss}" \
        if current.phase == "Training" and progress and progress.total_steps else ""
    print(current.phase or "Pending", training, flush=True)


try:
    done = client.create_and_wait(job, timeout_s=900, callback=show)
except JobFailed as failed:
    print(f"failed: {failed.reason}: {failed.message}\n{failed.last_logs}")
    raise SystemExit(1)

evaluation = client.evaluation(done.name)
print(f"{done.name}: {done.phase}, verdict {evaluation.verdict}")
for metric, value in evaluation.metrics.items():
    base = f"  base {value.base:.4g}  delta {value.delta:+.4g}" if value.base is not None else ""
    print(f"  {metric:<12} {value.tuned:.4g}{base}")
print("model:", client.checkpoints(done.name).output)
