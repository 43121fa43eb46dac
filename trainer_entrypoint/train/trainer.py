"""Build the TRL config and trainer for a job's method (a row of kubetune.contract.methods) from
the rendered trainer config."""

from __future__ import annotations

from typing import Any, Optional

from kubetune.contract.config import ModelConfig, PeftConfig, TrainerConfig
from kubetune.contract.methods import Method

from ..data import load_for_method
from ..errors import PermanentError
from ..sources import model_reference
from .generation_rate import GenerationMeter
from .rewards import reward_funcs


def model_init_kwargs(model: ModelConfig) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"trust_remote_code": model.trust_remote_code}
    if model.dtype != "auto":
        kwargs["dtype"] = model.dtype
    if model.attn_implementation:
        kwargs["attn_implementation"] = model.attn_implementation
    if model.revision:
        kwargs["revision"] = model.revision
    return kwargs


def trl_args(config: TrainerConfig):
    """The method's TRL config from config.training (the machine's defaults already in it)."""
    import trl

    config_class = getattr(trl, config.trainer.config_class)
    training = dict(config.training)
    if config.trainer.rewards and config.rewards:
        training["reward_weights"] = [reward.weight for reward in config.rewards]
    training["model_init_kwargs"] = {**model_init_kwargs(config.model), **(training.get("model_init_kwargs") or {})}
    try:
        return config_class(**training)
    except (TypeError, ValueError) as error:
        raise PermanentError(f"spec.training: {config_class.__name__} refused it: {error}") from None


def method_defaults(config: TrainerConfig) -> dict[str, Any]:
    """The method's TRL config defaults, by key."""
    import dataclasses

    import trl

    return {f.name: f.default for f in dataclasses.fields(getattr(trl, config.trainer.config_class))
            if f.default is not dataclasses.MISSING}


def training_default(config: TrainerConfig, key: str) -> Any:
    """The method's TRL config default for a key."""
    return method_defaults(config)[key]


def check_model(reference: str, model: ModelConfig) -> dict[str, Any]:
    """The model's config; fail permanently, before any heavy work, when the model cannot exist."""
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError
    from transformers import AutoConfig

    source = model.source
    try:
        return AutoConfig.from_pretrained(reference, revision=model.revision,
                                          trust_remote_code=model.trust_remote_code).to_dict()
    except (RepositoryNotFoundError, RevisionNotFoundError, GatedRepoError) as error:
        raise PermanentError(f"model {source}: {type(error).__name__}: {str(error).splitlines()[0]}") from None
    except (OSError, ValueError) as error:
        if "/" in reference and reference.startswith("/"):
            raise PermanentError(f"model {source}: {reference} is not a model folder: {error}") from None
        raise  # a hub connection error may pass; let the pod retry


def tokenizer_for(model: ModelConfig, reference: str):
    from transformers import AutoTokenizer

    location = model.tokenizer_location
    tokenizer_ref = model_reference(location, model.tokenizer or model.source) if location else reference
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_ref, revision=None if location else model.revision,
                                              trust_remote_code=model.trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def peft_config(peft: Optional[PeftConfig], method: Method):
    if not peft:
        return None
    from peft import LoraConfig

    targets = peft.target_modules
    return LoraConfig(
        r=peft.r, lora_alpha=peft.alpha, lora_dropout=peft.dropout,
        target_modules=targets[0] if targets == ["all-linear"] else targets,
        task_type="SEQ_CLS" if method.scores else "CAUSAL_LM",
    )


def quantization_config(peft: Optional[PeftConfig]):
    if not peft or peft.method != "qlora":
        return None
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.bfloat16)


def join_process_group(args) -> None:
    """Form the process group before the model loads: ZeRO-3 partitions weights while loading.

    accelerate initialises DeepSpeed's communication only on accelerators, so on the CPU it is
    done here (over the gloo group torchrun's env describes).
    """
    _ = args.device  # sets up torch.distributed from the torchrun env
    if args.deepspeed:
        import deepspeed

        if not deepspeed.comm.is_initialized():
            deepspeed.init_distributed(dist_backend="gloo" if args.use_cpu else "nccl", auto_mpi_discovery=False)


def build_trainer(config: TrainerConfig, callbacks: list[Any], reference: str):
    """The TRL trainer for config.training as it stands (the machine's defaults and the strategy
    already in it: see worker.prepare); `reference` is the model folder or hub id."""
    import trl

    method = config.trainer
    # The TRL config first: with ZeRO-3 it must exist before the model loads.
    args = trl_args(config)
    join_process_group(args)
    dataset = config.dataset
    train = load_for_method(dataset, method.name, dataset.split)
    evaluation = load_for_method(dataset, method.name, dataset.eval_split) if dataset.eval_split else None
    kwargs: dict[str, Any] = dict(
        model=reference, args=args, train_dataset=train, eval_dataset=evaluation,
        processing_class=tokenizer_for(config.model, reference), peft_config=peft_config(config.peft, method),
        callbacks=callbacks,
    )
    quantization = quantization_config(config.peft)
    if quantization is not None:
        kwargs["quantization_config"] = quantization
    if method.rewards:
        kwargs["reward_funcs"] = reward_funcs(config.rewards)
    trainer = construct(getattr(trl, method.trainer_class), kwargs, config.training)
    if method.generates_online:
        GenerationMeter(trainer).install()
    return trainer


def construct(trainer_class, kwargs: dict[str, Any], training: dict[str, Any]):
    """The TRL trainer; what it refuses at construction is a configuration error, named by the
    spec.training key it mentions (a token missing from the tokenizer, a report_to integration
    this image lacks), and no retry can fix it."""
    try:
        return trainer_class(**kwargs)
    except (ValueError, TypeError, ImportError, RuntimeError) as error:
        text = " ".join(str(error).split())
        if isinstance(error, RuntimeError) and "install" not in text:
            raise  # a runtime failure, not the configuration
        raise PermanentError(f"{_named_key(text, training)}: {trainer_class.__name__} refused it: {text}") from None


def _named_key(text: str, training: dict[str, Any]) -> str:
    keys = [key for key in training if key in text]
    if keys:
        return f"spec.training.{max(keys, key=len)}"
    if "Callback" in text and "report_to" in training:
        return "spec.training.report_to"  # transformers names the integration's callback, not the key
    return "spec.training"
