"""One training process (a torchrun rank): train, resume, save, record completion."""

from __future__ import annotations

import hashlib
import json
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from kubetune import contract
from kubetune.contract.config import TrainerConfig
from kubetune.contract.output import CompletionRecord, newest_complete_checkpoint
from kubetune.contract.plan import ModelShape, StrategyChoice, colocates
from kubetune.contract.progress import TrainingNumbers

from ..card import write_card
from ..errors import PermanentError, exit_code_for, write_termination_message
from ..sources import model_reference
from .checkpoints import discard_incomplete
from .compat import load_indexed_cpu_locations
from .defaults import Hardware, ModelTraits, detect, model_traits, plan_rank, with_strategy
from .resize import ResumePlan, convert_to_universal, plan_resume

WEIGHT_DIGEST_ENV = "KUBETUNE_WEIGHT_DIGEST_DIR"


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def for_this_world_size(config: TrainerConfig, resume_from: Optional[Path]) -> tuple[TrainerConfig, ResumePlan]:
    """The config with the keys that depend on the world size set for the current one."""
    from .trainer import training_default

    plan = plan_resume(config, resume_from, world_size(), training_default(config, "per_device_train_batch_size"))
    if rank() == 0:
        for note in plan.notes:
            print(f"kubetune: {note}", flush=True)
    return config.model_copy(update={"training": {**config.training, **plan.training}}), plan


@dataclass
class Prepared:
    """A config ready to train with: the machine's defaults and the strategy in it."""

    config: TrainerConfig
    reference: str  # the model folder or hub id
    choice: StrategyChoice
    flops_per_token: Optional[float] = None  # for MFU, when the GPU's peak is known
    peak_flops: Optional[float] = None  # all ranks together


def prepare(config: TrainerConfig, hardware: Hardware) -> Prepared:
    """Read the model's config, add the machine's defaults and resolve the strategy (the same on
    every rank: the same inputs give the same plan)."""
    from .trainer import check_model, method_defaults

    reference = model_reference(config.model.location, config.model.source)
    model_config = check_model(reference, config.model)
    traits = model_traits(model_config, hardware) if hardware.gpus else ModelTraits()
    shape = shape_of(model_config)
    planned = plan_rank(config, hardware, traits, method_defaults(config), shape,
                        config.distributed.planned_world_size or world_size())
    effective, work, choice = planned.effective, planned.work, planned.choice
    if rank() == 0:
        for note in [*effective.notes, f"distributed: {choice.strategy}, offload {choice.offload}: {choice.reason}"]:
            print(f"kubetune: {note}", flush=True)
    config = config.model_copy(update={
        "training": with_strategy(effective.training, choice),
        "distributed": config.distributed.model_copy(update={"strategy": choice.strategy, "offload": choice.offload}),
    })
    gpu = hardware.gpu
    if not (shape and work and gpu and gpu.peak_flops):
        return Prepared(config, reference, choice)
    return Prepared(config, reference, choice, shape.flops_per_token(work.sequence), gpu.peak_flops * world_size())


def shape_of(model_config: dict[str, Any]) -> Optional[ModelShape]:
    """The model's dimensions, or None for a config the plan cannot read (then nothing is planned)."""
    try:
        return ModelShape.from_config(model_config)
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None


def prepare_generation(config: TrainerConfig, cuda: bool) -> None:
    """A method that generates with vLLM inside the ranks says so; on a CPU, TRL's weight sync is
    made to work first (vllm_colocate). A server cannot take weights from a CPU rank."""
    if config.trainer.generates_online and config.training.get("use_vllm") and not colocates(config.training) \
            and not cuda:
        field = "spec.generation" if config.generation else "spec.training.vllm_mode"
        raise PermanentError(f"{field}: TRL pushes new weights to a vLLM server over NCCL, which needs CUDA on the "
                             "ranks; on the CPU generate with vllm_mode: colocate")
    if not (config.trainer.generates_online and colocates(config.training)):
        return
    from . import vllm_colocate

    on_cpu = vllm_colocate.prepare(config.training)
    if rank() == 0:
        how = "; on the CPU, weights sync through vLLM's reload_weights" if on_cpu else ""
        print(f"kubetune: generating with vLLM (colocate){how}", flush=True)


def start_progress(config: TrainerConfig):
    """Rank 0 serves progress; a busy port costs the metrics, never the training run."""
    from .progress import ProgressCallback, ProgressState, serve

    progress = ProgressState(config.job.name, config.job.namespace)
    port = int(os.environ.get(contract.ENV_METRICS_PORT, contract.METRICS_PORT))
    server = None
    try:
        server = serve(progress, port)
        print(f"kubetune: progress on :{server.server_address[1]}/progress and /metrics", flush=True)
    except OSError as error:
        print(f"kubetune: cannot serve progress on port {port}: {error}", flush=True)
    return progress, ProgressCallback(progress), server


def weights_digest(trainer) -> str:
    """SHA-256 of every full parameter (gathered under ZeRO-3): equal on every rank of a healthy run."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    parameters = sorted(model.named_parameters(), key=lambda item: item[0])
    gather = nullcontext()
    if trainer.is_deepspeed_enabled and trainer.accelerator.state.deepspeed_plugin.zero_stage == 3:
        import deepspeed

        gather = deepspeed.zero.GatheredParameters([p for _, p in parameters], modifier_rank=None)
    digest = hashlib.sha256()
    with gather:
        for name, parameter in parameters:
            digest.update(name.encode())
            digest.update(parameter.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def train(config: TrainerConfig, progress_server: bool = True) -> dict[str, Any]:
    """Train to the end (resuming if a checkpoint exists) and save; returns a short summary."""
    from .trainer import build_trainer

    output = config.output
    checkpoint_dir = Path(output.checkpoints)
    if rank() == 0:
        for path in discard_incomplete(checkpoint_dir):
            print(f"kubetune: removed incomplete checkpoint {path.name}", flush=True)
    resume_from: Optional[Path] = newest_complete_checkpoint(checkpoint_dir)
    callbacks, progress, callback, server = [], None, None, None
    if rank() == 0 and progress_server:
        progress, callback, server = start_progress(config)
        callbacks.append(callback)
    try:
        hardware = detect()
        prepared = prepare(config, hardware)
        if progress and callback:
            progress.update(distributed=prepared.choice)
            callback.count_flops(prepared.flops_per_token, prepared.peak_flops)
        config, plan = for_this_world_size(prepared.config, resume_from)
        prepare_generation(config, bool(hardware.gpus))
        trainer = build_trainer(config, callbacks, prepared.reference)
        if plan.universal and resume_from:
            if rank() == 0:
                started = time.monotonic()
                if convert_to_universal(resume_from):
                    print(f"kubetune: converted {resume_from.name} to a universal checkpoint in "
                          f"{time.monotonic() - started:.1f} s", flush=True)
            trainer.accelerator.wait_for_everyone()
        if resume_from:
            load_indexed_cpu_locations()
            print(f"kubetune: resuming from {resume_from.name}", flush=True)
        result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
        # Every rank takes part: ZeRO-3 gathers the consolidated weights here.
        trainer.save_model(output.model)
        if os.environ.get(WEIGHT_DIGEST_ENV):
            digest_file = Path(os.environ[WEIGHT_DIGEST_ENV]) / f"rank-{rank()}.json"
            digest_file.write_text(json.dumps({"rank": rank(), "sha256": weights_digest(trainer)}))
        if rank() == 0:
            trainer.processing_class.save_pretrained(output.model)
            CompletionRecord(uid=config.job.uid, global_step=trainer.state.global_step, model=output.model,
                             train_loss=result.training_loss, tokens=trainer.state.num_input_tokens_seen or None,
                             world_size=world_size()).write(Path(output.completion_record))
            write_card(config)
            if progress:
                progress.update(phase="succeeded")
                # The last numbers outlive the pod's progress server: a short run can end between
                # two reads of /progress, and the operator reads this on the worker's exit.
                write_termination_message(progress.snapshot().encode())
        # No rank exits before the completion record exists: any worker exiting 0 means "trained".
        trainer.accelerator.wait_for_everyone()
        return {"rank": rank(), "worldSize": trainer.args.world_size,
                "globalStep": trainer.state.global_step, "trainLoss": result.training_loss,
                "resumedFrom": resume_from.name if resume_from else None,
                "progress": TrainingNumbers.of(progress.snapshot()).wire() if progress else None}
    finally:
        if server:
            server.shutdown()
            server.server_close()


def main(config_file: Optional[str] = None) -> int:
    from ..config import load_config

    try:
        config = load_config(Path(config_file) if config_file else None)
        summary = train(config)
    except Exception as error:
        code = exit_code_for(error)
        if code is None:
            raise  # retryable: the rank fails, and torchrun and the pod's restart take it from there
        return code
    print(f"kubetune: training finished: {json.dumps(summary)}", flush=True)
    return contract.EXIT_SUCCESS
