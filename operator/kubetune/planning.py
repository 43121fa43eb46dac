"""`kubetune plan`: the resource plan of a job, without a cluster. The model's size comes from
its config.json (no weights are read); the numbers are contract.plan's, the same a training
rank uses when its job says `distributed.strategy: auto`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

from pydantic import Field

from .api.batch import global_batch_at
from .api.models import FineTuneJob
from .contract.builtin import TINY_MODEL, TINY_SPLITS, TINY_VOCAB
from .contract.document import Document
from .contract.gpus import GIB, MIB, Gpu, gpu_for_pods
from .contract.methods import METHODS
from .contract.plan import (
    PLANNED,
    DoesNotFit,
    ModelShape,
    StrategyChoice,
    StrategyMemory,
    Workload,
    choose_beside_vllm,
    colocates,
    generation_defaults,
    generation_for,
    Generation,
    gib,
    label,
    on_cpu,
    plan_defaults,
    server_generation,
    server_refusal,
    strategy_memory,
    training_memory,
    usable_bytes,
    vllm_share,
    with_generation_defaults,
    workload_for,
)
from .contract.sources import PATH, split_source


class ModelSummary(Document):
    source: str
    parameters: int
    trainable: int
    layers: int
    hidden: int
    vocab: int


class GpuSummary(Document):
    name: str
    memory_bytes: int
    usable_bytes: int
    bf16_tflops: Optional[float] = None
    ranks: int


class BatchSummary(Document):
    per_device: int
    gradient_accumulation_steps: int
    global_batch: int
    max_length: int
    tokens_per_step: int
    rows: Optional[int] = None
    steps_per_epoch: Optional[int] = None


class GenerationPlan(Document):
    """How a method that generates while it trains (GRPO, RLOO) generates on GPUs."""

    engine: str  # "vllm colocate", "vllm server" or "transformers"
    share: Optional[float] = None  # vllm_gpu_memory_utilization, with colocated vLLM
    chosen_by: Optional[str] = None  # "kubetune" or "spec.training", for the share
    vllm_bytes: Optional[int] = None  # the share of each GPU
    needs_bytes: Optional[int] = None  # what vLLM needs, by the plan
    needs: Optional[str] = None  # what that is made of
    training_bytes: Optional[int] = None  # what vLLM leaves of each GPU to training
    note: Optional[str] = None  # why vLLM is off, when kubetune left it off
    pool_gpus: Optional[int] = None  # a generation server's GPUs (spec.generation)
    tensor_parallel: Optional[int] = None  # and how each engine shards the model
    refused: Optional[str] = None  # why the server cannot hold the model


class JobPlan(Document):
    """What `kubetune plan --output json` prints."""

    job: str
    ranks: int
    model: ModelSummary
    gpu: Optional[GpuSummary] = None
    generation: Optional[GenerationPlan] = None
    batch: BatchSummary
    strategies: list[StrategyMemory] = Field(default_factory=list)
    auto: Optional[StrategyChoice] = None
    refused: Optional[str] = None  # why auto cannot fit the job
    flops_per_token: float


@dataclass
class Unreadable(Exception):
    """The model's config cannot be read from here; `why` says what to pass instead."""

    why: str


def model_config(source: str, revision: Optional[str], claims: Mapping[str, str]) -> dict[str, Any]:
    """The config.json of a model source, read where this machine can: builtin, a local folder,
    a pvc:// folder mounted here (--pvc), or the hub when it is reachable."""
    scheme, rest = split_source(source)
    if scheme == "builtin":
        return {**TINY_MODEL, "vocab_size": TINY_VOCAB}
    if scheme == PATH:
        return _read_config(Path(rest), source)
    if scheme == "pvc":
        claim, _, sub_path = rest.partition("/")
        if claim not in claims:
            raise Unreadable(f"{source}: say where claim {claim} is mounted here with --pvc {claim}=DIR, "
                             f"or pass --model-config")
        return _read_config(Path(claims[claim]) / sub_path, source)
    if scheme == "hf":
        return _hub_config(rest, revision, source)
    raise Unreadable(f"{source}: a {scheme}:// model is not read by plan; pass its config.json with --model-config")


def _read_config(folder: Path, source: str) -> dict[str, Any]:
    path = folder / "config.json"
    try:
        return json.loads(path.read_text())
    except OSError as error:
        raise Unreadable(f"{source}: cannot read {path}: {error.strerror or error}") from None
    except ValueError as error:
        raise Unreadable(f"{source}: {path} is not JSON: {error}") from None


def _hub_config(repo: str, revision: Optional[str], source: str) -> dict[str, Any]:
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise Unreadable(f"{source}: huggingface_hub is not installed here; pass --model-config") from None
    try:
        return json.loads(Path(hf_hub_download(repo, "config.json", revision=revision)).read_text())
    except Exception as error:  # offline, gated, missing: all say the same to the user
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise Unreadable(f"{source}: the hub is not reachable from here or refused ({first}); pass its "
                         f"config.json with --model-config") from None


def dataset_rows(job: FineTuneJob) -> Optional[int]:
    """Rows of the training split when the data is local and counts cheaply (builtin, JSON lines)."""
    dataset = job.spec.dataset
    scheme, rest = split_source(dataset.source)
    rows: Optional[int] = None
    if scheme == "builtin":
        rows = TINY_SPLITS.get(dataset.split)
    elif scheme == PATH and Path(rest).is_dir():
        files = sorted(Path(rest).glob(f"{dataset.split}*.jsonl")) or sorted(Path(rest).glob("*.jsonl"))
        rows = sum(sum(1 for line in f.open() if line.strip()) for f in files) if files else None
    if rows is not None and dataset.max_samples:
        rows = min(rows, dataset.max_samples)
    return rows


def planned_generation(job: FineTuneJob, shape: ModelShape, work: Workload, memory: int
                       ) -> tuple[dict[str, Any], Optional[GenerationPlan]]:
    """The TRL keys with the vLLM defaults a rank would add on these GPUs, and how the job
    generates; the keys unchanged for a method that does not generate while it trains."""
    spec = job.spec
    if not METHODS[spec.method].generates_online:
        return spec.training, None
    qlora = bool(spec.peft and spec.peft.method == "qlora")
    generation = generation_for(spec.training, work, qlora, plan_defaults(True))
    if spec.generation:
        return {**spec.training, "use_vllm": True, "vllm_mode": "server"}, server_plan(job, shape, work, generation,
                                                                                      memory)
    defaults, note = generation_defaults(spec.training, shape, work, generation, memory,
                                         spec.distributed.strategy, spec.distributed.offload)
    training = with_generation_defaults(spec.training, defaults)
    if not colocates(training):
        engine = "vllm server" if training.get("use_vllm") else "transformers"
        return training, GenerationPlan(engine=engine, note=note)
    share = vllm_share(training)
    chosen_by = "kubetune" if any(d.key == "vllm_gpu_memory_utilization" for d in defaults) else "spec.training"
    return training, GenerationPlan(engine="vllm colocate", share=share, chosen_by=chosen_by,
                                    vllm_bytes=memory - training_memory(memory, training),
                                    needs_bytes=generation.bytes(shape), needs=generation.describe(shape),
                                    training_bytes=training_memory(memory, training))


def server_plan(job: FineTuneJob, shape: ModelShape, work: Workload, per_rank: Generation, memory: int
                ) -> GenerationPlan:
    """The generation server's memory per GPU (on the workers' GPU type), and whether it holds the model."""
    pool = job.spec.generation
    generation = server_generation(per_rank, work.gpus, pool.engines(), pool.tensor_parallel)
    share = pool.gpu_memory_utilization
    return GenerationPlan(engine="vllm server", share=share, chosen_by="spec.generation",
                          vllm_bytes=int(memory * share), needs_bytes=generation.bytes(shape),
                          needs=generation.describe(shape), pool_gpus=pool.nodes * pool.gpus_per_node,
                          tensor_parallel=pool.tensor_parallel,
                          refused=server_refusal(shape, generation, memory, share))


def plan_job(job: FineTuneJob, config: dict[str, Any], gpu: Optional[Gpu]) -> JobPlan:
    spec, resources = job.spec, job.spec.resources
    shape = ModelShape.from_config(config)
    ranks = resources.nodes * resources.processes
    peft = spec.peft
    work = workload_for(shape, spec.training, resources.planned_ranks, peft.r if peft else None,
                        bool(peft and peft.method == "qlora"), plan_defaults(METHODS[spec.method].generates_online))
    memory = gpu.memory_bytes if gpu else None
    training, generation = spec.training, None
    if memory and resources.gpus_per_node:
        training, generation = planned_generation(job, shape, work, memory)
    for_training = training_memory(memory, training) if memory else None
    strategies = [strategy_memory(shape, work, strategy, offload, for_training) for strategy, offload in PLANNED]
    auto, refused = None, None
    if resources.gpus_per_node == 0 and (spec.distributed.strategy == "auto"):
        auto = on_cpu()
    elif memory:
        try:
            auto = choose_beside_vllm(shape, work, memory, training)
        except DoesNotFit as error:
            refused = str(error)
    if generation and generation.refused:
        refused = "; ".join(filter(None, (refused, generation.refused)))
    global_batch = global_batch_at(spec, resources.nodes)
    rows = dataset_rows(job)
    return JobPlan(
        job=job.metadata.name,
        ranks=ranks,
        model=ModelSummary(source=spec.model.source, parameters=shape.parameters,
                           trainable=work.trainable or shape.parameters, layers=shape.layers, hidden=shape.hidden,
                           vocab=shape.vocab),
        gpu=GpuSummary(name=gpu.name, memory_bytes=gpu.memory_bytes, usable_bytes=usable_bytes(gpu.memory_bytes),
                       bf16_tflops=gpu.bf16_tflops, ranks=ranks) if gpu else None,
        generation=generation,
        batch=BatchSummary(per_device=work.micro_batch,
                           gradient_accumulation_steps=global_batch // (work.micro_batch * ranks) or 1,
                           global_batch=global_batch, max_length=work.sequence,
                           tokens_per_step=global_batch * work.sequence, rows=rows,
                           steps_per_epoch=-(-rows // global_batch) if rows else None),
        strategies=strategies, auto=auto, refused=refused, flops_per_token=shape.flops_per_token(work.sequence),
    )


def chosen_gpu(job: FineTuneJob, table_gpu: Optional[Gpu], memory_gib: Optional[float],
               tflops: Optional[float]) -> Optional[Gpu]:
    """--gpu (with --gpu-memory / --gpu-tflops over it), else what the job's pods say they get."""
    resources = job.spec.resources
    gpu = table_gpu or gpu_for_pods(resources.node_selector, resources.gpu_resource_name)
    if memory_gib is None and tflops is None:
        return gpu
    return Gpu(name=gpu.name if gpu else "GPU",
               memory_bytes=int(memory_gib * GIB) if memory_gib else (gpu.memory_bytes if gpu else 0),
               bf16_tflops=tflops if tflops else (gpu.bf16_tflops if gpu else None), pattern="")


def _count(parameters: int) -> str:
    return f"{parameters / 1e9:.2f}B" if parameters >= 1e9 else f"{parameters / 1e6:.2f}M"


def render_text(plan: JobPlan) -> str:
    model, batch = plan.model, plan.batch
    lines = [f"{plan.job}: {model.source}, {_count(model.parameters)} parameters "
             f"({model.layers} layers, hidden {model.hidden}, vocabulary {model.vocab})"
             + (f"; {_count(model.trainable)} trained (LoRA)" if model.trainable != model.parameters else "")]
    if plan.gpu:
        tflops = f", {plan.gpu.bf16_tflops:g} TFLOP/s bf16" if plan.gpu.bf16_tflops else ""
        lines.append(f"GPU: {plan.gpu.name}, {gib(plan.gpu.memory_bytes)} ({gib(plan.gpu.usable_bytes)} usable"
                     f"{tflops}) x {plan.gpu.ranks} ranks")
    if plan.generation:
        lines.append(generation_text(plan.generation))
    lines.append(f"batch: {batch.per_device} per device x {batch.gradient_accumulation_steps} accumulation steps x "
                 f"{plan.ranks} ranks = "
                 f"{batch.global_batch} sequences, {batch.tokens_per_step:,} tokens per optimizer step at "
                 f"max_length {batch.max_length}")
    if batch.steps_per_epoch:
        lines.append(f"steps per epoch: {batch.steps_per_epoch} ({batch.rows} rows; fewer with packing)")
    lines.append(f"model FLOPs per token: {plan.flops_per_token:.3g} (6 x weights + attention)")
    lines.append("")
    unit, scale = ("GiB", GIB) if max(s.total for s in plan.strategies) >= GIB else ("MiB", MIB)

    def size(value: int) -> str:
        return f"{value / scale:.1f}"

    header = (f"per GPU, {unit}", "weights", "grads", "optim", "act", "act no-ckpt", "total", "fits")
    rows = [header] + [(label(s.strategy, s.offload), size(s.weights), size(s.gradients), size(s.optimizer),
                        size(s.activations_checkpointed), size(s.activations_full), size(s.total),
                        "-" if s.fits is None else "yes" if s.fits else "no") for s in plan.strategies]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines += ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
              for row in rows]
    lines.append("(act: activations with gradient checkpointing; the total counts what the job sets)")
    lines.append("")
    if plan.auto:
        lines.append(f"auto picks {label(plan.auto.strategy, plan.auto.offload)}: {plan.auto.reason}")
    elif plan.refused:
        lines.append(f"auto refuses the job: {plan.refused}")
    else:
        lines.append("auto: no GPU memory known; name one with --gpu (or --gpu-memory)")
    return "\n".join(lines)


def generation_text(generation: GenerationPlan) -> str:
    if generation.engine == "vllm server" and generation.pool_gpus is not None:
        fits = f"; it cannot: {generation.refused}" if generation.refused else ""
        return (f"generation: a vLLM server of {generation.pool_gpus} GPUs (spec.generation), tensorParallel "
                f"{generation.tensor_parallel}, gpuMemoryUtilization {generation.share:g} = "
                f"{gib(generation.vllm_bytes or 0)} of each of its GPUs; it needs about "
                f"{gib(generation.needs_bytes or 0)} per GPU ({generation.needs}){fits}; training plans on its "
                f"whole GPUs")
    if generation.engine != "vllm colocate":
        how = "a vLLM server (vllm_mode: server)" if generation.engine == "vllm server" else "transformers"
        note = f" ({generation.note})" if generation.note else ""
        return f"generation: {how}; training plans on the whole GPU{note}"
    return (f"generation: vLLM colocated in each rank, vllm_gpu_memory_utilization {generation.share:g} "
            f"({generation.chosen_by}) = {gib(generation.vllm_bytes or 0)} of each GPU; it needs about "
            f"{gib(generation.needs_bytes or 0)} ({generation.needs}); training plans on the other "
            f"{gib(generation.training_bytes or 0)} ({gib(usable_bytes(generation.training_bytes or 0))} usable)")


def refusal(job: FineTuneJob) -> Optional[str]:
    """Why `auto` cannot fit a GPU job, when its model config (builtin or a local folder: no
    network) and its GPU are known here."""
    resources = job.spec.resources
    gpu = gpu_for_pods(resources.node_selector, resources.gpu_resource_name)
    local = split_source(job.spec.model.source)[0] in ("builtin", PATH)
    if job.spec.distributed.strategy != "auto" or not resources.gpus_per_node or not gpu or not local:
        return None
    try:
        refused = plan_job(job, model_config(job.spec.model.source, None, {}), gpu).refused
    except (Unreadable, ValueError, KeyError, TypeError):
        return None  # the ranks plan once they can read it
    return f"auto: {refused}" if refused else None
