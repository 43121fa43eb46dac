"""The fast defaults on a GPU (detection injected), the CPU config unchanged, and what `auto`
resolves to on a rank."""

import pytest
from local_pods import rendered_config

from conftest import with_spec
from kubetune.contract.gpus import gpu_named
from kubetune.contract.plan import ModelShape, workload_for
from model_shapes import LLAMA3_70B, QWEN25_05B
from trainer_entrypoint.errors import PermanentError
from trainer_entrypoint.train.defaults import (
    Hardware,
    ModelTraits,
    effective_training,
    resolve_strategy,
    with_strategy,
)
from trainer_entrypoint.train.trainer import method_defaults

H100 = Hardware(gpus=8, device_name="NVIDIA H100 80GB HBM3", memory_bytes=gpu_named("H100").memory_bytes,
                bf16=True, tf32=True, flash_attn=True, liger=True)
EVERYTHING = ModelTraits(flash_attention=True, sdpa=True, liger=True)


def config_of(**spec):
    return rendered_config(with_spec(**spec))[1]


def effective(config, hardware=H100, traits=EVERYTHING):
    return effective_training(config, hardware, traits, method_defaults(config))


def test_on_a_gpu_every_default_is_set_and_logged():
    result = effective(config_of(method="sft", resources={"gpusPerNode": 8}))
    training = result.training
    assert training["bf16"] is True and training["tf32"] is True
    assert training["model_init_kwargs"] == {"attn_implementation": "flash_attention_2"}
    assert training["packing"] is True and training["packing_strategy"] == "bfd"
    assert training["use_liger_kernel"] is True
    assert training["gradient_checkpointing_kwargs"] == {"use_reentrant": False}
    logged = "\n".join(result.notes)
    for key in ("bf16", "tf32", "attn_implementation", "packing", "use_liger_kernel", "gradient_checkpointing_kwargs"):
        assert f"default {key}=" in logged
    assert len(result.notes) == 6


def test_without_flash_attn_sdpa_is_chosen_and_packing_stays_padding_free():
    hardware = Hardware(**{**H100.__dict__, "flash_attn": False, "liger": False})
    training = effective(config_of(method="sft"), hardware).training
    assert training["model_init_kwargs"] == {"attn_implementation": "sdpa"}
    assert training["packing"] is True
    assert "use_liger_kernel" not in training


def test_a_key_the_user_set_wins():
    config = config_of(method="sft", model={"source": "builtin://tiny", "attnImplementation": "eager"},
                       training={"bf16": False, "tf32": False, "packing": False, "use_liger_kernel": False,
                                 "gradient_checkpointing_kwargs": {"use_reentrant": True}})
    training = effective(config).training
    assert training["bf16"] is False and training["tf32"] is False and training["packing"] is False
    assert training["use_liger_kernel"] is False
    assert training["gradient_checkpointing_kwargs"] == {"use_reentrant": True}
    assert "model_init_kwargs" not in training  # spec.model.attnImplementation reaches the model as it is


def test_packing_is_for_sft_only_and_reentrancy_only_with_checkpointing():
    training = effective(config_of(method="dpo", training={"gradient_checkpointing": False})).training
    assert "packing" not in training and "gradient_checkpointing_kwargs" not in training


def test_on_a_cpu_the_config_is_what_it_was():
    config = config_of(method="sft", training={"max_steps": 3})
    training = effective(config, Hardware(), ModelTraits()).training
    assert training == {**config.training, "include_num_input_tokens_seen": True, "use_cpu": True, "bf16": False,
                        "fp16": False, "dataloader_pin_memory": False}


def test_auto_on_a_cpu_is_ddp_and_a_named_strategy_is_kept():
    assert resolve_strategy(config_of(), Hardware(), None, None).strategy == "ddp"
    named = resolve_strategy(config_of(distributed={"strategy": "zero3", "offload": "all"}), H100, None, None)
    assert (named.strategy, named.offload) == ("zero3", "all")


def plan_inputs(config, model):
    shape = ModelShape.from_config(model)
    training = effective(config).training
    return shape, workload_for(shape, training, 8, defaults=method_defaults(config))


def test_auto_on_gpus_picks_from_the_plan_and_builds_the_deepspeed_config():
    small = config_of(resources={"gpusPerNode": 8})
    choice = resolve_strategy(small, H100, *plan_inputs(small, QWEN25_05B))
    assert choice.strategy == "ddp" and "GiB per GPU" in choice.reason
    big = config_of(resources={"gpusPerNode": 8})
    choice = resolve_strategy(big, H100, *plan_inputs(big, LLAMA3_70B))
    assert choice.strategy == "zero3" and choice.offload != "none"
    deepspeed = with_strategy({}, choice)["deepspeed"]
    assert deepspeed["zero_optimization"]["stage"] == 3 and "offload_optimizer" in deepspeed["zero_optimization"]


def test_a_job_that_cannot_fit_is_a_configuration_error_with_the_numbers():
    config = config_of(resources={"gpusPerNode": 1}, training={"per_device_train_batch_size": 64, "max_length": 8192,
                                                                 "gradient_checkpointing": False})
    shape = ModelShape.from_config(LLAMA3_70B)
    work = workload_for(shape, effective(config).training, 1, defaults=method_defaults(config))
    small_gpu = Hardware(**{**H100.__dict__, "memory_bytes": gpu_named("A100-40").memory_bytes})
    with pytest.raises(PermanentError, match=r"spec.distributed.strategy: auto: .*70.55B.*zero3 \+ all offload "
                                             r"would need [0-9.]+ GiB"):
        resolve_strategy(config, small_gpu, shape, work)


def test_rank_0_reports_mfu_from_its_rate_and_serves_it_as_a_gauge():
    from types import SimpleNamespace

    from prometheus_client import CollectorRegistry, generate_latest

    from kubetune.contract.plan import mfu
    from trainer_entrypoint.train.progress import ProgressCallback, ProgressState

    state = ProgressState("demo", "default")
    callback = ProgressCallback(state)
    callback.count_flops(3.0e9, 989e12)
    control = SimpleNamespace(should_evaluate=False, should_save=False)
    trainer_state = SimpleNamespace(global_step=1, max_steps=10, epoch=0.1, num_input_tokens_seen=0)
    callback.on_train_begin(None, trainer_state, control)
    callback.on_step_end(None, trainer_state, control)
    started = callback._last[0]
    trainer_state.global_step, trainer_state.num_input_tokens_seen = 2, 50_000
    callback.on_step_end(None, trainer_state, control)
    snapshot = state.snapshot()
    rate = 50_000 / (callback._last[0] - started)
    assert snapshot.tokens_per_second == pytest.approx(rate)
    assert snapshot.mfu == pytest.approx(mfu(rate, 3.0e9, 989e12)) and snapshot.mfu > 0
    registry = CollectorRegistry()
    registry.register(state)
    assert b'kubetune_training_mfu_ratio{job="demo",namespace="default"}' in generate_latest(registry)


def test_without_a_known_peak_mfu_is_left_out():
    from types import SimpleNamespace

    from trainer_entrypoint.train.progress import ProgressCallback, ProgressState

    state = ProgressState("demo", "default")
    callback = ProgressCallback(state)
    callback.count_flops(3.0e9, None)
    control = SimpleNamespace(should_evaluate=False, should_save=False)
    for step, tokens in ((1, 0), (2, 1000)):
        callback.on_step_end(None, SimpleNamespace(global_step=step, max_steps=10, epoch=0.1,
                                                   num_input_tokens_seen=tokens), control)
    assert state.snapshot().tokens_per_second and state.snapshot().mfu is None


# --- GRPO and RLOO generate with vLLM colocated in the ranks ------------------------------------

def rank_plan(config, model, hardware=H100):
    from trainer_entrypoint.train.defaults import plan_rank

    return plan_rank(config, hardware, EVERYTHING, method_defaults(config), ModelShape.from_config(model), 8)


VLLM_KEYS = ("use_vllm", "vllm_mode", "vllm_gpu_memory_utilization")
GRPO_REWARDS = [{"function": "answer_match"}]


@pytest.mark.parametrize("method", ["grpo", "rloo"])
def test_on_gpus_grpo_and_rloo_generate_with_colocated_vllm_each_default_logged(method):
    from kubetune.contract.plan import VLLM_MIN_SHARE

    config = config_of(method=method, rewards=GRPO_REWARDS, resources={"gpusPerNode": 8})
    planned = rank_plan(config, QWEN25_05B)
    training = planned.effective.training
    # Qwen2.5-0.5B needs a few GiB of an H100: the share is the floor.
    assert (training["use_vllm"], training["vllm_mode"], training["vllm_gpu_memory_utilization"]) == \
        (True, "colocate", VLLM_MIN_SHARE)
    notes = [note for note in planned.effective.notes if any(f"default {key}=" in note for key in VLLM_KEYS)]
    assert len(notes) == 3 and all(note.endswith("(to turn it off: spec.training.use_vllm: false)") for note in notes)
    assert "vLLM needs about" in notes[2] and "training plans on the other 63.7 GiB" in notes[2]
    assert "vLLM (colocate) takes 0.2 of each 79.6 GiB GPU" in planned.choice.reason


@pytest.mark.parametrize("training, expected", [
    ({"use_vllm": False}, {"use_vllm": False}),  # generate() with transformers
    ({"vllm_mode": "server"}, {"use_vllm": True, "vllm_mode": "server"}),  # the job's own server
    ({"use_vllm": True, "vllm_gpu_memory_utilization": 0.4},
     {"use_vllm": True, "vllm_mode": "colocate", "vllm_gpu_memory_utilization": 0.4}),
])
def test_a_vllm_key_the_user_set_wins(training, expected):
    config = config_of(method="grpo", rewards=GRPO_REWARDS, resources={"gpusPerNode": 8}, training=training)
    effective = rank_plan(config, QWEN25_05B).effective.training
    assert {key: effective[key] for key in VLLM_KEYS if key in effective} == expected


def test_methods_that_do_not_generate_and_cpus_get_no_vllm_keys():
    assert not set(VLLM_KEYS) & set(rank_plan(config_of(method="dpo"), QWEN25_05B).effective.training)
    grpo = config_of(method="grpo", rewards=GRPO_REWARDS)
    assert not set(VLLM_KEYS) & set(rank_plan(grpo, QWEN25_05B, Hardware()).effective.training)


def test_vllm_stays_off_when_it_would_need_more_than_half_a_gpu():
    config = config_of(method="grpo", rewards=GRPO_REWARDS, resources={"gpusPerNode": 8})
    planned = rank_plan(config, LLAMA3_70B)
    assert "use_vllm" not in planned.effective.training
    assert any(note.startswith("use_vllm stays off: colocated vLLM would need") for note in planned.effective.notes)
    assert "vLLM" not in planned.choice.reason


def test_vllm_stays_off_when_the_named_strategy_would_not_fit_beside_it():
    from kubetune.contract.gpus import GIB

    config = config_of(method="grpo", rewards=GRPO_REWARDS, resources={"gpusPerNode": 8},
                       distributed={"strategy": "ddp"})
    # Qwen2.5-0.5B under DDP needs 9.9 GiB, which a 13 GiB GPU holds, but not beside vLLM's 3 GiB.
    planned = rank_plan(config, QWEN25_05B, Hardware(**{**H100.__dict__, "memory_bytes": 13 * GIB}))
    assert "use_vllm" not in planned.effective.training
    assert any(note.startswith("use_vllm stays off: training does not fit the 9.9 GiB of each GPU left beside "
                               "colocated vLLM (which needs 3.0 GiB)") for note in planned.effective.notes)


def test_auto_plans_on_what_colocated_vllm_leaves_and_says_so_when_nothing_fits():
    config = config_of(method="grpo", rewards=GRPO_REWARDS, resources={"gpusPerNode": 8},
                       training={"use_vllm": True, "vllm_gpu_memory_utilization": 0.9})
    shape = ModelShape.from_config(QWEN25_05B)
    planned = rank_plan(config, QWEN25_05B)
    alone = resolve_strategy(config, H100, shape, planned.work, {})
    # DDP's 9.9 GiB fits a whole H100, not the 10% vLLM leaves of it (less the reserve).
    assert alone.strategy == "ddp" and planned.choice.strategy == "zero2"
    assert planned.choice.reason.startswith("zero2 needs 2.7 GiB per GPU of 6.6 GiB usable; ddp would need 9.9 GiB")
    assert planned.choice.reason.endswith("; vLLM (colocate) takes 0.9 of each 79.6 GiB GPU")
    with pytest.raises(PermanentError, match=r"vLLM \(colocate\) takes 0.9 of each 79.6 GiB GPU "
                                             r"\(spec.training.use_vllm: false leaves training all of it\)"):
        rank_plan(config, LLAMA3_70B)
