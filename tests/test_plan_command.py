"""`kubetune plan` and the refusal `kubetune validate` gives a job `auto` cannot fit."""

import json

import yaml
from click.testing import CliRunner

from conftest import REPO
from kubetune.cli import main
from model_shapes import LLAMA3_70B, QWEN25_05B


def job_file(tmp_path, model_source, **resources):
    document = {"apiVersion": "kubetune.io/v1alpha1", "kind": "FineTuneJob", "metadata": {"name": "planned"},
                "spec": {"method": "sft", "model": {"source": model_source}, "dataset": {"source": "builtin://tiny"},
                         "training": {"per_device_train_batch_size": 1},
                         "resources": {"gpusPerNode": 8, **resources}}}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(document))
    return str(path)


def model_folder(tmp_path, config):
    folder = tmp_path / "model"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def plan(*args, **env):
    return CliRunner().invoke(main, ["plan", *args], env=env)


def test_the_quickstart_plans_ddp_on_cpu_with_its_batch_and_epoch():
    result = plan(str(REPO / "examples" / "quickstart.yaml"))
    assert result.exit_code == 0, result.output
    assert "auto picks ddp: no GPUs" in result.output
    assert "steps per epoch: 16 (256 rows" in result.output and "2,048 tokens per optimizer step" in result.output


def test_a_local_model_on_named_gpus_prints_every_strategy_and_the_pick_as_json(tmp_path):
    folder = model_folder(tmp_path, QWEN25_05B)
    result = plan(job_file(tmp_path, str(folder)), "--gpu", "H100", "--output", "json")
    assert result.exit_code == 0, result.output
    planned = json.loads(result.output)
    assert planned["model"]["parameters"] == 494_032_768
    assert [(s["strategy"], s["offload"]) for s in planned["strategies"]][:4] == [
        ("ddp", "none"), ("zero1", "none"), ("zero2", "none"), ("zero3", "none")]
    assert all(s["total"] == s["weights"] + s["gradients"] + s["optimizer"] + s["activations"]
               for s in planned["strategies"])
    assert planned["auto"]["strategy"] == "ddp" and planned["batch"]["tokensPerStep"] == 8 * 1024


def test_the_gpu_comes_from_the_node_selector_and_a_pvc_folder_from_pvc(tmp_path):
    folder = model_folder(tmp_path, LLAMA3_70B)
    path = job_file(tmp_path, "pvc://models/llama", nodes=2,
                    nodeSelector={"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"})
    (folder.parent / "llama").symlink_to(folder)
    unreadable = plan(path)
    assert unreadable.exit_code == 2 and "spec.model.source: pvc://models/llama: say where claim models" in \
        unreadable.output
    result = plan(path, "--pvc", f"models={folder.parent}")
    assert result.exit_code == 0, result.output
    assert "GPU: H100, 79.6 GiB" in result.output and "x 16 ranks" in result.output
    assert "auto picks zero3 + optimizer offload" in result.output and "zero3 would need" in result.output


def test_a_hub_model_offline_says_so_and_how_to_go_on(tmp_path):
    result = plan(job_file(tmp_path, "hf://Qwen/Qwen2.5-0.5B"), "--gpu", "H100", HF_HUB_OFFLINE="1")
    assert result.exit_code == 2
    assert "hf://Qwen/Qwen2.5-0.5B: the hub is not reachable" in result.output and "--model-config" in result.output
    config = model_folder(tmp_path, QWEN25_05B) / "config.json"
    assert plan(job_file(tmp_path, "hf://Qwen/Qwen2.5-0.5B"), "--gpu", "H100", "--model-config", str(config),
                HF_HUB_OFFLINE="1").exit_code == 0


def test_a_job_auto_cannot_fit_is_refused_by_plan_and_validate_with_the_numbers(tmp_path):
    folder = model_folder(tmp_path, LLAMA3_70B)
    path = job_file(tmp_path, str(folder), gpusPerNode=1, nodeSelector={"nvidia.com/gpu.product": "NVIDIA-L40S"})
    document = yaml.safe_load(open(path))
    document["spec"]["training"] = {"per_device_train_batch_size": 32, "max_length": 4096,
                                    "gradient_checkpointing": False}
    open(path, "w").write(yaml.safe_dump(document))
    refused = plan(path)
    assert refused.exit_code == 1 and "auto refuses the job: a 70.55B-parameter model does not fit 1 GPU(s)" in \
        refused.output
    validated = CliRunner().invoke(main, ["validate", path])
    assert validated.exit_code == 1
    assert "spec.distributed.strategy: auto: a 70.55B-parameter model does not fit" in validated.output
    assert "would need" in validated.output and "GiB" in validated.output


def grpo_job_file(tmp_path, model_source, training):
    document = {"apiVersion": "kubetune.io/v1alpha1", "kind": "FineTuneJob", "metadata": {"name": "planned"},
                "spec": {"method": "grpo", "model": {"source": model_source}, "dataset": {"source": "builtin://tiny"},
                         "rewards": [{"function": "answer_match"}], "training": training,
                         "resources": {"gpusPerNode": 8}}}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(document))
    return path, document


def test_a_grpo_job_plans_vllms_share_and_auto_on_what_it_leaves_as_its_ranks_do(tmp_path):
    from kubetune.contract.gpus import gpu_named
    from kubetune.contract.plan import ModelShape
    from local_pods import rendered_config
    from model_shapes import LLAMA2_7B
    from trainer_entrypoint.train.defaults import Hardware, ModelTraits, plan_rank
    from trainer_entrypoint.train.trainer import method_defaults

    folder = model_folder(tmp_path, LLAMA2_7B)
    path, document = grpo_job_file(tmp_path, str(folder), {"per_device_train_batch_size": 16,
                                                           "max_completion_length": 2048})
    planned = json.loads(plan(str(path), "--gpu", "H100", "--output", "json").output)
    generation = planned["generation"]
    # 12.6 GiB of weights and 24 GiB of KV cache for 16 sequences of 2,560 tokens: 0.44 of an H100.
    assert (generation["engine"], generation["share"], generation["chosenBy"]) == ("vllm colocate", 0.44, "kubetune")
    assert generation["vllmBytes"] + generation["trainingBytes"] == planned["gpu"]["memoryBytes"]
    # ZeRO-2 fits a whole H100, not what vLLM leaves of it.
    assert planned["auto"]["strategy"] == "zero3" and "vLLM (colocate) takes 0.44" in planned["auto"]["reason"]
    assert not next(s for s in planned["strategies"] if s["strategy"] == "zero2")["fits"]

    config = rendered_config(document)[1]
    h100 = Hardware(gpus=8, device_name="NVIDIA H100 80GB HBM3", memory_bytes=gpu_named("H100").memory_bytes, bf16=True)
    ranked = plan_rank(config, h100, ModelTraits(sdpa=True), method_defaults(config), ModelShape.from_config(LLAMA2_7B),
                       8)
    assert ranked.effective.training["vllm_gpu_memory_utilization"] == generation["share"]
    assert ranked.choice.strategy == planned["auto"]["strategy"]

    text = plan(str(path), "--gpu", "H100").output
    assert "generation: vLLM colocated in each rank, vllm_gpu_memory_utilization 0.44 (kubetune) = 35.0 GiB of each " \
           "GPU; it needs about" in text and "training plans on the other 44.6 GiB" in text


def test_a_grpo_job_without_vllm_or_with_its_own_server_plans_on_the_whole_gpu(tmp_path):
    folder = model_folder(tmp_path, QWEN25_05B)
    for training, engine in (({"use_vllm": False}, "transformers"), ({"vllm_mode": "server"}, "a vLLM server")):
        path, _ = grpo_job_file(tmp_path, str(folder), training)
        result = plan(str(path), "--gpu", "H100")
        assert result.exit_code == 0, result.output
        assert f"generation: {engine}" in result.output and "training plans on the whole GPU" in result.output
        assert "vLLM (colocate)" not in result.output


def server_job_file(tmp_path, model_source, generation):
    path, document = grpo_job_file(tmp_path, model_source, {"per_device_train_batch_size": 4,
                                                           "max_completion_length": 512})
    document["spec"]["generation"] = generation
    path.write_text(yaml.safe_dump(document))
    return str(path)


def test_a_generation_server_is_planned_per_gpu_and_refused_when_its_share_cannot_hold_the_weights(tmp_path):
    model = str(model_folder(tmp_path, LLAMA3_70B))
    small = plan(server_job_file(tmp_path, model, {"gpusPerNode": 2, "tensorParallel": 1}), "--gpu", "H100",
                 "--output", "json")
    assert small.exit_code == 1, small.output
    generation = json.loads(small.output)["generation"]
    assert (generation["engine"], generation["poolGpus"], generation["tensorParallel"]) == ("vllm server", 2, 1)
    assert "raise spec.generation.tensorParallel" in generation["refused"]
    assert generation["needsBytes"] > generation["vllmBytes"]  # 70B in bf16 on one GPU is 131 GiB
    wide = plan(server_job_file(tmp_path, model, {"gpusPerNode": 8, "tensorParallel": 8}), "--gpu", "H100")
    assert wide.exit_code == 0, wide.output
    assert "generation: a vLLM server of 8 GPUs (spec.generation), tensorParallel 8" in wide.output
    assert "it cannot" not in wide.output and "training plans on its whole GPUs" in wide.output
