"""The resource plan: parameter counts from configs, model states against DeepSpeed's own
estimators, what `auto` picks for well-known sizes, the GPU table, and MFU."""

import re

import pytest

from kubetune.contract.gpus import GIB, gpu_for_pods, gpu_named
from kubetune.contract.plan import DoesNotFit, ModelShape, Workload, choose, mfu, strategy_memory
from model_shapes import LLAMA2_7B, LLAMA3_70B, QWEN25_05B, QWEN25_7B

SIZES = {"qwen2.5-0.5b": QWEN25_05B, "llama-2-7b": LLAMA2_7B, "qwen2.5-7b": QWEN25_7B, "llama-3-70b": LLAMA3_70B}
H100 = gpu_named("H100").memory_bytes
A100_40 = gpu_named("A100-40").memory_bytes


@pytest.mark.parametrize("name", SIZES)
def test_the_parameter_count_read_from_a_config_is_the_models(name):
    import torch
    import transformers

    config = transformers.AutoConfig.for_model(**SIZES[name])
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config)
    shape = ModelShape.from_config(SIZES[name])
    assert shape.parameters == sum({id(p): p.numel() for p in model.parameters()}.values())
    assert shape.largest_module == max(sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules())


def deepspeed_gib(estimator, capsys, **kwargs) -> dict[str, float]:
    """Per-GPU GiB of each option line DeepSpeed's `_all_cold` estimator prints."""
    estimator(**kwargs)
    lines = re.findall(r"^\s*[0-9.]+GB \|\s*([0-9.]+)GB \| (.+)$", capsys.readouterr().out, re.MULTILINE)
    return {re.sub(r"\s|OffloadDeviceEnum\.", "", options): float(gpu) for gpu, options in lines}


@pytest.mark.parametrize("name", ["qwen2.5-0.5b", "llama-2-7b", "qwen2.5-7b", "llama-3-70b"])
@pytest.mark.parametrize("gpus", [8, 16])
def test_model_states_agree_with_deepspeeds_estimators_within_5_percent(name, gpus, capsys):
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs_all_cold
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs_all_cold

    shape = ModelShape.from_config(SIZES[name])
    work = Workload(micro_batch=1, sequence=1024, gpus=gpus)
    zero2 = deepspeed_gib(estimate_zero2_model_states_mem_needs_all_cold, capsys, total_params=shape.parameters,
                          num_gpus_per_node=8, num_nodes=gpus // 8)
    zero3 = deepspeed_gib(estimate_zero3_model_states_mem_needs_all_cold, capsys, total_params=shape.parameters,
                          largest_layer_params=shape.largest_module, num_gpus_per_node=8, num_nodes=gpus // 8)
    theirs = {("zero2", "none"): zero2["offload_optimizer=none"],
              ("zero2", "optimizer"): zero2["offload_optimizer=cpu"],
              ("zero3", "none"): zero3["offload_param=none,offload_optimizer=none,zero_init=1"],
              ("zero3", "optimizer"): zero3["offload_param=none,offload_optimizer=cpu,zero_init=1"],
              ("zero3", "all"): zero3["offload_param=cpu,offload_optimizer=cpu,zero_init=1"]}
    for (strategy, offload), expected in theirs.items():
        ours = strategy_memory(shape, work, strategy, offload).model_states / GIB
        assert ours == pytest.approx(expected, rel=0.05, abs=0.01), (strategy, offload)


def pick(model, gpus, gpu_memory, **workload):
    shape = ModelShape.from_config(model)
    if workload.pop("lora", False):
        workload["trainable"] = shape.lora_parameters(16)
    work = Workload(micro_batch=workload.pop("micro_batch", 8), sequence=1024, gpus=gpus, **workload)
    return choose(shape, work, gpu_memory)


def test_auto_picks_ddp_for_a_small_model_on_8x80gb():
    assert (pick(QWEN25_05B, 8, H100).strategy, pick(QWEN25_05B, 8, H100).offload) == ("ddp", "none")


@pytest.mark.parametrize("model", [LLAMA2_7B, QWEN25_7B])
def test_auto_picks_a_zero_stage_for_7b_full_fine_tuning_on_8x80gb(model):
    choice = pick(model, 8, H100)
    assert choice.strategy == "zero2" and choice.offload == "none"
    assert "ddp would need" in choice.reason


def test_auto_picks_zero3_for_70b_full_fine_tuning_on_2x8x80gb():
    choice = pick(LLAMA3_70B, 16, H100, micro_batch=1)
    # DeepSpeed's own estimate of ZeRO-3 model states on 16 GPUs is 77.9 GiB: no room for
    # activations on an 79.6 GiB H100, so the optimizer goes to CPU memory.
    assert choice.strategy == "zero3" and choice.offload == "optimizer"
    assert "zero3 would need" in choice.reason
    # With twice the GPUs the states halve and plain ZeRO-3 fits.
    assert (pick(LLAMA3_70B, 32, H100, micro_batch=1).strategy, pick(LLAMA3_70B, 32, H100, micro_batch=1).offload) \
        == ("zero3", "none")


def test_70b_on_1x8x40gb_offloads_or_is_refused_with_numbers():
    choice = pick(LLAMA3_70B, 8, A100_40, micro_batch=1)
    assert choice.strategy == "zero3" and choice.offload in ("optimizer", "all")
    with pytest.raises(DoesNotFit, match=r"70.55B-parameter model does not fit 8 GPU\(s\) of 40.0 GiB .*"
                                         r"zero3 \+ all offload would need [0-9.]+ GiB"):
        pick(LLAMA3_70B, 8, A100_40, micro_batch=64, gradient_checkpointing=False)


def test_lora_on_70b_fits_without_offload():
    choice = pick(LLAMA3_70B, 8, H100, lora=True)
    assert choice.offload == "none" and choice.strategy in ("ddp", "zero2", "zero3")


def test_gradient_checkpointing_shrinks_activations():
    shape = ModelShape.from_config(LLAMA2_7B)
    memory = strategy_memory(shape, Workload(micro_batch=8, sequence=1024, gpus=8), "zero2", "none")
    assert memory.activations_checkpointed < memory.activations_full / 5
    assert memory.activations == memory.activations_checkpointed


@pytest.mark.parametrize("device,row", [("NVIDIA H100 80GB HBM3", "H100"), ("NVIDIA A100-SXM4-80GB", "A100-80"),
                                        ("NVIDIA A100-SXM4-40GB", "A100-40"), ("NVIDIA H200", "H200"),
                                        ("NVIDIA B200", "B200"), ("NVIDIA L40S", "L40S"), ("h100", "H100")])
def test_gpus_are_recognised_by_device_name(device, row):
    assert gpu_named(device).name == row


def test_the_pods_gpu_comes_from_labels_or_the_mig_resource():
    assert gpu_for_pods({"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}, "nvidia.com/gpu").name == "H100"
    assert gpu_for_pods({"cloud.google.com/gke-accelerator": "nvidia-a100-80gb"}, "nvidia.com/gpu").name == "A100-80"
    assert gpu_for_pods({"nvidia.com/gpu.memory": "24576"}, "nvidia.com/gpu").memory_bytes == 24576 * 1024**2
    assert gpu_for_pods({}, "nvidia.com/mig-3g.40gb").memory_bytes == 40 * 1000**3
    assert gpu_for_pods({"kubernetes.io/os": "linux"}, "nvidia.com/gpu") is None


def test_mfu_of_a_known_model_and_throughput_is_the_hand_computed_value():
    shape = ModelShape.from_config(QWEN25_05B)
    # Qwen2.5-0.5B: 24 layers, hidden 896, 14 heads of 64, 2 KV heads, MLP 4864, vocab 151936.
    attention = 896 * (2 * 896 + 2 * 128) + (896 + 2 * 128)  # q, k, v, o and the q/k/v biases
    mlp = 3 * 896 * 4864
    matmul_weights = 24 * (attention + mlp) + 151936 * 896  # the tied LM head is a matmul
    flops_per_token = 6 * matmul_weights + 12 * 24 * 896 * 1024
    assert flops_per_token == 3_228_174_336
    assert shape.flops_per_token(1024) == flops_per_token
    # 100,000 tokens/s on one H100 (989 dense bf16 TFLOP/s):
    assert mfu(100_000, shape.flops_per_token(1024), gpu_named("H100").peak_flops) == pytest.approx(
        3_228_174_336 * 100_000 / 989e12)
    assert mfu(100_000, flops_per_token, 989e12) == pytest.approx(0.3264, abs=1e-4)


# --- vLLM colocated in the training ranks -------------------------------------------------------

def test_trls_vllm_defaults_are_the_installed_trls():
    import dataclasses

    import trl

    from kubetune.contract.methods import METHODS
    from kubetune.contract.plan import TRL_VLLM_DEFAULTS

    for method in (m for m in METHODS.values() if m.generates_online):
        defaults = {f.name: f.default for f in dataclasses.fields(getattr(trl, method.config_class))}
        assert {key: defaults[key] for key in TRL_VLLM_DEFAULTS} == TRL_VLLM_DEFAULTS, method.name


@pytest.mark.parametrize("training, colocated, share", [
    ({}, False, 0.0),
    ({"use_vllm": False, "vllm_gpu_memory_utilization": 0.4}, False, 0.0),
    ({"use_vllm": True}, True, 0.3),  # TRL's default mode and share
    ({"use_vllm": True, "vllm_mode": "server"}, False, 0.0),
    ({"use_vllm": True, "vllm_gpu_memory_utilization": "0.45"}, True, 0.45),
])
def test_colocated_vllm_takes_its_share_of_each_gpu_from_the_trl_keys(training, colocated, share):
    from kubetune.contract.plan import colocates, training_memory, vllm_share

    assert colocates(training) is colocated and vllm_share(training) == share
    assert training_memory(100 * GIB, training) == int(100 * GIB * (1 - share))


def test_what_vllm_needs_is_its_weights_the_kv_cache_of_the_generation_batch_and_an_overhead():
    from kubetune.contract.plan import GENERATION_OVERHEAD_BYTES, generation_for, workload_for

    shape = ModelShape.from_config(QWEN25_05B)
    training = {"per_device_train_batch_size": 8, "gradient_accumulation_steps": 4, "max_completion_length": 1024}
    work = workload_for(shape, training, 8, defaults={})
    generation = generation_for(training, work, defaults={})
    # TRL generates per_device_train_batch_size x steps_per_generation (gradient_accumulation_steps)
    # completions at once in each rank, each a 512-token prompt (assumed) and the completion.
    assert (generation.sequences, generation.sequence) == (32, 512 + 1024)
    kv_per_token = 2 * 24 * 2 * 64 * 2  # K and V x layers x KV heads x head size x bf16
    assert generation.bytes(shape) == 2 * shape.parameters + kv_per_token * 32 * 1536 + GENERATION_OVERHEAD_BYTES
    assert generation_for({**training, "steps_per_generation": 1}, work, defaults={}).sequences == 8
    assert generation_for({**training, "generation_batch_size": 128}, work, defaults={}).sequences == 16
    sharded = generation_for({**training, "vllm_tensor_parallel_size": 2}, work, defaults={})
    assert sharded.weights(shape) == shape.parameters and sharded.sequences == 64  # a TP group's prompts


@pytest.mark.parametrize("model, gpu_memory, share", [
    (QWEN25_05B, H100, 0.2),  # needs 3.5 GiB of 79.6: the floor
    (QWEN25_7B, H100, 0.24),  # needs 18.8 GiB of 79.6, rounded up to hundredths
    (QWEN25_7B, A100_40, 0.48),
    (LLAMA2_7B, A100_40, 0.5),  # 32 KV heads: 38.6 GiB of 40, more than the cap
])
def test_vllms_share_is_what_it_needs_between_a_fifth_and_a_half(model, gpu_memory, share):
    from kubetune.contract.plan import generation_for, generation_share, workload_for

    shape = ModelShape.from_config(model)
    training = {"per_device_train_batch_size": 8, "gradient_accumulation_steps": 4, "max_completion_length": 1024}
    work = workload_for(shape, training, 8, defaults={})
    assert generation_share(shape, generation_for(training, work, defaults={}), gpu_memory) == share


def test_auto_beside_vllm_plans_on_what_vllm_leaves():
    from kubetune.contract.plan import choose_beside_vllm

    shape = ModelShape.from_config(QWEN25_7B)
    work = Workload(micro_batch=8, sequence=1024, gpus=8)
    alone = choose_beside_vllm(shape, work, H100, {})
    assert alone == choose(shape, work, H100)
    beside = choose_beside_vllm(shape, work, H100, {"use_vllm": True, "vllm_gpu_memory_utilization": 0.6})
    assert (alone.strategy, beside.strategy) == ("zero2", "zero3")
    assert beside.reason.endswith("; vLLM (colocate) takes 0.6 of each 79.6 GiB GPU")
    with pytest.raises(DoesNotFit, match=r"spec.training.use_vllm: false leaves training all of it"):
        choose_beside_vllm(ModelShape.from_config(LLAMA3_70B), Workload(micro_batch=8, sequence=4096, gpus=8), H100,
                           {"use_vllm": True, "vllm_gpu_memory_utilization": 0.9})
