"""spec.generation: the vLLM generation server the operator runs for grpo and rloo.

Rendering and the server's command line are checked as data; under `kubetune run` on the CPU
the real server starts as a local pod, the workers are held until it is ready, and it answers
TRL's own client. (Pushing weights to it is NCCL and needs CUDA: that runs in bench/gpu.py.)
"""

import json
import time

import pytest

from conftest import with_spec
from kubetune import contract
from kubetune.api.validation import InvalidJob, parse_job
from kubetune.contract.config import TrainerConfig
from kubetune.lifecycle import ConditionType
from kubetune.local.run import LocalRun
from kubetune.render import render_job
from kubetune.render.generation import HEALTH_PATH
from trainer_entrypoint.generation_server import VLLM_API_SERVER, VLLM_CLI, server_command

GRPO = {"method": "grpo", "rewards": [{"function": "answer_match"}]}


def server_job(generation=None, training=None, **spec):
    return parse_job(with_spec(**GRPO, generation=generation or {"gpusPerNode": 1, "tensorParallel": 1},
                               training=training or {}, **spec))


def config_of(rendered) -> TrainerConfig:
    return TrainerConfig.decode(rendered.config_map["data"][contract.CONFIG_FILE])


def test_the_server_is_a_stateful_set_and_service_created_before_the_workers_at_zero_replicas():
    rendered = render_job(server_job({"gpusPerNode": 2, "tensorParallel": 2, "gpuMemoryUtilization": 0.8}))
    kinds = [(o["kind"], o["metadata"]["name"]) for o in rendered.training_objects()]
    assert kinds.index(("StatefulSet", "demo-generation")) < kinds.index(("StatefulSet", "demo-worker"))
    server = rendered.generation_stateful_set
    assert server["spec"]["replicas"] == 0  # the lifecycle scales it up
    container = server["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][-1] == "generation-server"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert container["readinessProbe"]["httpGet"] == {"path": HEALTH_PATH, "port": "http"}
    assert container["ports"][0]["containerPort"] == contract.GENERATION_PORT
    service = rendered.generation_service
    assert service["spec"]["selector"] == server["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["port"] == contract.GENERATION_PORT


def test_the_ranks_are_pointed_at_the_server_through_trl_keys():
    config = config_of(render_job(server_job({"gpusPerNode": 4, "tensorParallel": 2})))
    assert {k: v for k, v in config.training.items() if k.startswith("vllm") or k == "use_vllm"} == {
        "use_vllm": True, "vllm_mode": "server", "vllm_server_host": "demo-generation.ml.svc",
        "vllm_server_port": contract.GENERATION_PORT, "vllm_group_port": contract.GENERATION_GROUP_PORT}
    assert (config.generation.tensor_parallel, config.generation.data_parallel, config.generation.gpus) == (2, 2, 4)


def test_a_job_without_spec_generation_has_no_server():
    rendered = render_job(parse_job(with_spec(**GRPO)))
    assert rendered.generation_stateful_set is None and rendered.generation_service is None
    assert config_of(rendered).generation is None


@pytest.mark.parametrize("key,value", [("vllm_mode", "colocate"), ("use_vllm", False),
                                       ("vllm_server_base_url", "http://elsewhere:8000")])
def test_trl_keys_that_contradict_the_server_are_refused_by_name(key, value):
    with pytest.raises(InvalidJob) as refused:
        server_job(training={key: value})
    assert f"spec.training.{key}: set by spec.generation" in str(refused.value)


def test_trl_keys_that_agree_with_the_server_are_accepted():
    assert server_job(training={"use_vllm": True, "vllm_mode": "server"}).spec.generation is not None


def test_the_server_runs_trls_command_through_the_entry_point_that_works():
    config = config_of(render_job(server_job({"gpusPerNode": 2, "tensorParallel": 2, "maxModelLen": 2048,
                                              "args": ["--enable-chunked-prefill"]})))
    on_gpu = server_command(config, "/models/m", 8000, cuda=True, cli=True)
    assert on_gpu[1:5] == ["-m", VLLM_CLI, "serve", "/models/m"]
    assert on_gpu[on_gpu.index("--tensor-parallel-size") + 1] == "2"
    assert on_gpu[on_gpu.index("--max-model-len") + 1] == "2048"
    assert "--weight-transfer-config" in on_gpu and on_gpu[-1] == "--enable-chunked-prefill"
    on_cpu = server_command(config, "/models/m", 8000, cuda=False, cli=False)
    assert on_cpu[1:5] == ["-m", VLLM_API_SERVER, "--model", "/models/m"]
    assert "--weight-transfer-config" not in on_cpu and "--enforce-eager" in on_cpu


def _step_until(local, done, seconds, seen):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        decision = local.step()
        seen.append((decision.phase, local.cluster.replicas, local.cluster.generation and
                     local.cluster.generation[0].ready))
        if done(decision):
            return decision
        time.sleep(1)
    raise AssertionError(f"not done in {seconds} s; last: {seen[-3:]}; server log: "
                         f"{local.cluster.generation[0].last_log_lines(30) if local.cluster.generation else ''}")


@pytest.mark.timeout(540)
def test_kubetune_run_starts_the_server_holds_the_workers_and_the_server_answers_trls_client(tmp_path):
    from trl.generation.vllm_client import VLLMClient

    job = server_job({"gpusPerNode": 0}, evaluation={"enabled": False})
    local = LocalRun.prepare(job, tmp_path / "run", tmp_path / "cache", {})
    seen = []
    try:
        ready = _step_until(local, lambda d: any(c.type == ConditionType.GENERATION_READY and c.status == "True"
                                                 for c in d.status.conditions), 300, seen)
        held = [replicas for phase, replicas, server_ready in seen[:-1]]
        assert held and set(held) == {0}, seen  # no worker before the server answered
        assert local.cluster.generation[0].ready and ready.status.generation.ready == 1
        training = json.loads((tmp_path / "run" / "config" / contract.CONFIG_FILE).read_text())["training"]
        assert training["vllm_server_host"] == "127.0.0.1"
        client = VLLMClient(host=training["vllm_server_host"], server_port=training["vllm_server_port"])
        prompt = [1, 5, 9, 14]
        answer = client.generate(prompts=[prompt], n=2, max_tokens=4, temperature=1.0)
        assert answer["prompt_ids"] == [prompt]
        assert len(answer["completion_ids"]) == 2 and all(1 <= len(ids) <= 4 for ids in answer["completion_ids"])
        log = local.cluster.generation[0].log_file.read_text()
        assert f"kubetune: generation server: -m {VLLM_API_SERVER}" in log
        # The workers started then; on the CPU they cannot push weights to it, and say so once.
        failed = _step_until(local, lambda d: d.phase == "Failed", 120, seen)
        assert failed.status.failure.reason == "PermanentError"
        assert failed.status.failure.message.startswith("spec.generation: TRL pushes new weights")
        assert failed.status.workers.restarts == 0
    finally:
        local.cluster.stop()


def test_the_grpo_examples_render_what_the_readme_says():
    """examples/grpo.yaml: TRL's own vLLM keys, colocate, passed through as they are;
    examples/grpo-server.yaml: the operator's generation server, the ranks pointed at it."""
    import yaml

    from conftest import REPO

    colocated = config_of(render_job(parse_job(yaml.safe_load((REPO / "examples" / "grpo.yaml").read_text()))))
    assert (colocated.training["use_vllm"], colocated.training["vllm_mode"]) == (True, "colocate")
    assert colocated.generation is None
    served = render_job(parse_job(yaml.safe_load((REPO / "examples" / "grpo-server.yaml").read_text())))
    config = config_of(served)
    assert (config.training["vllm_mode"], config.training["vllm_server_host"]) == (
        "server", "qwen-grpo-server-generation.ml.svc")
    container = served.generation_stateful_set["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert served.stateful_set["spec"]["replicas"] == 0  # held until the initializer and the server are ready
