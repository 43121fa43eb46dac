"""Pure rendering: the env contract, schema-valid manifests, DeepSpeed, chaining, secrets."""

import ast
import json
import os
import subprocess
import sys

import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner

from conftest import REPO, example_documents, with_spec
from kubetune import contract
from kubetune.api.validation import parse_job
from kubetune.cli import main
from kubetune.contract.config import TrainerConfig
from kubetune.render import RenderSettings, output_location, render_job

KUBERNETES_VERSIONS = ["1.29", "1.34"]
UID = "6f1c2b7e-0000-4000-8000-000000000001"


def rendered(document, uid=UID, **kwargs):
    job = parse_job(document)
    job = job.model_copy(update={"metadata": job.metadata.model_copy(update={"uid": uid})})
    return render_job(job, **kwargs)


def trainer_container(objects):
    return objects.stateful_set["spec"]["template"]["spec"]["containers"][0]


def env_of(container):
    return {item["name"]: item for item in container["env"]}


def test_three_node_env_contract():
    document = with_spec(resources={"nodes": 3, "gpusPerNode": 8})
    document["metadata"] = {"name": "llama", "namespace": "research"}
    objects = rendered(document)
    stateful_set, service = objects.stateful_set, objects.service
    env = env_of(trainer_container(objects))

    assert env["PET_NNODES"]["value"] == "3"
    assert env["PET_NPROC_PER_NODE"]["value"] == "8"
    assert env["WORLD_SIZE"]["value"] == "24"
    # The node rank is the pod's StatefulSet ordinal, read through the downward API.
    ordinal = {"fieldRef": {"fieldPath": "metadata.labels['apps.kubernetes.io/pod-index']"}}
    assert env["PET_NODE_RANK"]["valueFrom"] == ordinal
    assert env["NODE_RANK"]["valueFrom"] == ordinal
    # Worker 0's stable DNS name, built from what was rendered: <set>-0.<service>.<ns>.svc
    assert stateful_set["spec"]["serviceName"] == service["metadata"]["name"]
    master = f"{stateful_set['metadata']['name']}-0.{service['metadata']['name']}.research.svc"
    assert master == "llama-worker-0.llama-workers.research.svc"
    assert env["PET_MASTER_ADDR"]["value"] == master == env["MASTER_ADDR"]["value"]
    port = int(env["PET_MASTER_PORT"]["value"])
    assert port == int(env["MASTER_PORT"]["value"])
    assert {"name": "master", "port": port, "targetPort": "master"} in service["spec"]["ports"]
    assert {"name": "master", "containerPort": port, "protocol": "TCP"} in trainer_container(objects)["ports"]
    assert stateful_set["spec"]["replicas"] == 3
    assert stateful_set["spec"]["podManagementPolicy"] == "Parallel"
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
    assert "PET_RDZV_BACKEND" not in env


def test_elastic_env_uses_c10d_rendezvous_on_worker_zero():
    elastic = {"minNodes": 1, "maxNodes": 4, "keepGlobalBatch": False}
    objects = rendered(with_spec(resources={"nodes": 2, "elastic": elastic}))
    env = env_of(trainer_container(objects))
    assert env["PET_NNODES"]["value"] == "1:4"
    assert env["PET_RDZV_BACKEND"]["value"] == "c10d"
    assert env["PET_RDZV_ENDPOINT"]["value"] == f"demo-worker-0.demo-workers.ml.svc:{contract.RENDEZVOUS_PORT}"
    assert env["PET_RDZV_ID"]["value"] == UID
    assert env["PET_MAX_RESTARTS"]["value"] == "3"
    # The operator, not torchrun's 600 s, decides how long a job waits for minNodes; a node that
    # joins later gets its MASTER_ADDR only when the rendezvous store is not shared.
    assert env["PET_RDZV_CONF"]["value"] == "join_timeout=604800"
    assert env["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"]["value"] == "1"
    # Ranks follow the sorted addresses: worker 0 holds rank 0 and serves /progress.
    assert env["PET_LOCAL_ADDR"]["value"] == "$(POD_NAME).demo-workers.ml.svc"
    names = [item["name"] for item in trainer_container(objects)["env"]]
    assert names.index("POD_NAME") < names.index("PET_LOCAL_ADDR")  # defined before it is referenced
    assert objects.stateful_set["spec"]["replicas"] == 2


def test_an_elastic_job_tells_the_trainer_the_global_batch_it_keeps():
    def trainer_config(keep):
        job = with_spec(training={"per_device_train_batch_size": 2, "gradient_accumulation_steps": 3},
                        resources={"nodes": 2, "elastic": {"minNodes": 1, "maxNodes": 4, "keepGlobalBatch": keep}})
        return TrainerConfig.decode(rendered(job).config_map["data"][contract.CONFIG_FILE])

    assert trainer_config(True).elastic.global_batch_size == 2 * 3 * 4
    assert trainer_config(False).elastic.global_batch_size is None
    assert TrainerConfig.decode(rendered(with_spec()).config_map["data"][contract.CONFIG_FILE]).elastic is None


def every_rendered_object():
    documents = list(example_documents())
    outputs = {d["metadata"]["name"]: output_location(parse_job(d)) for _, d in documents}
    for path, document in documents:
        for obj in rendered(document, upstream_outputs=outputs).all_objects():
            yield pytest.param(obj, id=f"{path.stem}/{obj['kind']}/{obj['metadata']['name']}")


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("manifest", list(every_rendered_object()))
def test_rendered_manifest_is_valid_kubernetes(manifest, version):
    kubernetes_validate.validate(manifest, version, strict=True)


def test_every_example_renders_all_five_kinds():
    kinds = {obj["kind"] for _, d in example_documents() for obj in rendered(d).all_objects()}
    assert kinds == {"ConfigMap", "PersistentVolumeClaim", "Service", "StatefulSet", "Job"}


def test_worker_pods_have_gpus_shared_memory_and_a_restricted_security_context():
    objects = rendered(with_spec(resources={"nodes": 1, "gpusPerNode": 4, "shmSize": "32Gi"}))
    pod = objects.stateful_set["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 4
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    shm = next(v for v in pod["volumes"] if v["name"] == "shm")
    assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": "32Gi"}
    assert {"name": "shm", "mountPath": "/dev/shm"} in container["volumeMounts"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod["restartPolicy"] == "Always"


def test_config_map_carries_trl_keys_unchanged_plus_managed_ones():
    training = {"learning_rate": 2e-5, "packing": True, "lr_scheduler_kwargs": {"min_lr_rate": 0.1}}
    objects = rendered(with_spec(training=training, checkpointing={"everySteps": 7, "keep": 4}))
    config = json.loads(objects.config_map["data"][contract.CONFIG_FILE])
    assert {k: config["training"][k] for k in training} == training
    assert config["training"]["save_steps"] == 7 and config["training"]["save_total_limit"] == 4
    assert config["training"]["output_dir"] == "/output/checkpoints"
    assert config["job"]["uid"] == UID
    assert config["model"]["location"] == {"kind": "builtin", "ref": "tiny"}
    mounts = {m["name"]: m["mountPath"] for m in trainer_container(objects)["volumeMounts"]}
    assert mounts["config"] == contract.CONFIG_DIR
    assert {"name": contract.ENV_CONFIG, "value": f"{contract.CONFIG_DIR}/{contract.CONFIG_FILE}"} in (
        trainer_container(objects)["env"]
    )


def test_zero3_with_offload_renders_a_deepspeed_config_that_saves_consolidated_weights():
    objects = rendered(with_spec(distributed={"strategy": "zero3", "offload": "all"}))
    deepspeed = json.loads(objects.config_map["data"][contract.DEEPSPEED_FILE])
    zero = deepspeed["zero_optimization"]
    assert zero["stage"] == 3
    assert zero["stage3_gather_16bit_weights_on_model_save"] is True
    assert zero["offload_optimizer"]["device"] == "cpu" and zero["offload_param"]["device"] == "cpu"
    config = json.loads(objects.config_map["data"][contract.CONFIG_FILE])
    assert config["training"]["deepspeed"] == f"{contract.CONFIG_DIR}/{contract.DEEPSPEED_FILE}"


@pytest.mark.parametrize("strategy,stage", [("zero1", 1), ("zero2", 2)])
def test_zero_stages(strategy, stage):
    objects = rendered(with_spec(distributed={"strategy": strategy}))
    deepspeed = json.loads(objects.config_map["data"][contract.DEEPSPEED_FILE])
    assert deepspeed["zero_optimization"]["stage"] == stage
    assert "offload_optimizer" not in deepspeed["zero_optimization"]


def test_ddp_and_fsdp_have_no_deepspeed_file():
    assert contract.DEEPSPEED_FILE not in rendered(with_spec()).config_map["data"]
    fsdp = rendered(with_spec(distributed={"strategy": "fsdp", "offload": "all"}))
    config = json.loads(fsdp.config_map["data"][contract.CONFIG_FILE])
    assert contract.DEEPSPEED_FILE not in fsdp.config_map["data"]
    assert config["training"]["fsdp"] == "full_shard auto_wrap offload"


def test_chained_job_reads_the_upstream_output_read_only():
    objects = rendered(with_spec(method="dpo", model={"source": "job://sft-run"}))
    pod = objects.stateful_set["spec"]["template"]["spec"]
    assert {"name": "input-sft-run-output",
            "persistentVolumeClaim": {"claimName": "sft-run-output", "readOnly": True}} in pod["volumes"]
    assert {"name": "input-sft-run-output", "mountPath": "/inputs/sft-run-output", "readOnly": True} in (
        pod["containers"][0]["volumeMounts"]
    )
    config = json.loads(objects.config_map["data"][contract.CONFIG_FILE])
    assert config["model"]["location"] == {"kind": "path", "ref": "/inputs/sft-run-output/model", "job": "sft-run"}


def test_chained_job_follows_an_upstream_that_writes_to_an_existing_claim():
    upstream = parse_job(with_spec(output={"claimName": "models", "subPath": "runs/sft"}))
    objects = rendered(with_spec(method="dpo", model={"source": "job://demo-sft"}),
                       upstream_outputs={"demo-sft": output_location(upstream)})
    config = json.loads(objects.config_map["data"][contract.CONFIG_FILE])
    assert config["model"]["location"]["ref"] == "/inputs/models/runs/sft/model"


def test_existing_claim_means_no_claim_is_created():
    objects = rendered(with_spec(output={"claimName": "models"}))
    assert objects.output_claim is None
    volumes = objects.stateful_set["spec"]["template"]["spec"]["volumes"]
    assert {"name": "output", "persistentVolumeClaim": {"claimName": "models"}} in volumes
    config = json.loads(objects.config_map["data"][contract.CONFIG_FILE])
    assert config["output"]["model"] == "/output/demo/model"


def test_secrets_reach_pods_only_through_secret_references():
    objects = rendered(with_spec(credentials={"hfToken": {"name": "hf", "key": "tok"}, "s3SecretName": "s3"}))
    container = trainer_container(objects)
    assert env_of(container)["HF_TOKEN"]["valueFrom"] == {"secretKeyRef": {"name": "hf", "key": "tok"}}
    assert env_of(container)["AWS_SECRET_ACCESS_KEY"]["valueFrom"] == \
        {"secretKeyRef": {"name": "s3", "key": "AWS_SECRET_ACCESS_KEY"}}
    assert env_of(container)["AWS_ENDPOINT_URL"]["valueFrom"]["secretKeyRef"]["optional"] is True
    # Only named keys: no envFrom, which would hand the pod every key of the Secret.
    for pod in (objects.stateful_set["spec"]["template"]["spec"], objects.evaluation_job["spec"]["template"]["spec"]):
        assert all("envFrom" not in c for c in pod["containers"])
        assert {"HF_TOKEN", "AWS_ACCESS_KEY_ID"} <= {e["name"] for e in pod["containers"][0]["env"]}
    assert "HF_TOKEN" not in json.dumps(objects.config_map) and "AWS_" not in json.dumps(objects.config_map)


def test_suspended_job_renders_zero_workers():
    assert rendered(with_spec(runPolicy={"suspend": True})).stateful_set["spec"]["replicas"] == 0


def test_evaluation_job_fails_fast_on_the_permanent_exit_code():
    job = rendered(with_spec(resources={"gpusPerNode": 8})).evaluation_job
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": 1}
    rule = job["spec"]["podFailurePolicy"]["rules"][0]
    assert rule["action"] == "FailJob" and rule["onExitCodes"]["values"] == [contract.EXIT_PERMANENT]
    assert rendered(with_spec(evaluation={"enabled": False})).evaluation_job is None
    no_data = with_spec(dataset={"source": "builtin://tiny"})
    assert rendered(no_data).evaluation_job is None
    assert rendered(with_spec(dataset={"source": "builtin://tiny"},
                              evaluation={"dataset": {"source": "pvc://data/eval"}})).evaluation_job is not None


def test_images_come_from_settings_unless_the_spec_names_one():
    settings = RenderSettings(trainer_image="registry.local/trainer:1", evaluator_image="registry.local/eval:1")
    objects = rendered(with_spec(), settings=settings)
    assert trainer_container(objects)["image"] == "registry.local/trainer:1"
    assert objects.evaluation_job["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.local/eval:1"
    custom = rendered(with_spec(resources={"image": "mine:2"}), settings=settings)
    assert trainer_container(custom)["image"] == "mine:2"


def test_owner_references_need_a_uid():
    assert rendered(with_spec()).service["metadata"]["ownerReferences"][0]["uid"] == UID
    assert "ownerReferences" not in rendered(with_spec(), uid=None).service["metadata"]


# Every example rendered, as JSON in the order the renderer built it (sets and dicts included).
RENDER_EVERY_EXAMPLE = f"""
import json, sys
sys.path.insert(0, {str(REPO / "tests")!r})
from conftest import example_documents
from kubetune.api.validation import parse_job
from kubetune.render import output_location, render_job
documents = [document for _, document in example_documents()]
outputs = {{d["metadata"]["name"]: output_location(parse_job(d)) for d in documents}}
for document in documents:
    job = parse_job(document)
    job = job.model_copy(update={{"metadata": job.metadata.model_copy(update={{"uid": {UID!r}}})}})
    print(json.dumps(render_job(job, upstream_outputs=outputs).all_objects()))
"""


def render_in_a_process(hash_seed):
    env = {**os.environ, "PYTHONHASHSEED": str(hash_seed)}
    done = subprocess.run([sys.executable, "-c", RENDER_EVERY_EXAMPLE], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_rendering_is_deterministic():
    # String hashing differs between processes: a set or dict order that leaks into a manifest shows up here.
    first, second = render_in_a_process(1), render_in_a_process(2)
    assert first.count("\n") == len(list(example_documents()))
    assert first == second


def test_the_config_map_holds_a_trainer_config_the_runtime_decodes():
    objects = rendered(with_spec(peft={"r": 8}, evaluation={"metrics": ["loss", "pass@1"]}))
    config = TrainerConfig.decode(objects.config_map["data"][contract.CONFIG_FILE])
    assert config.trainer.trainer_class == "SFTTrainer" and config.peft.r == 8
    assert config.evaluation.metrics == ["loss", "pass@1"] and config.evaluation.dataset is None
    assert config.evaluation_data() == (config.dataset, "test")
    assert config.output.completion_record == f"{contract.OUTPUT_DIR}/{contract.COMPLETION_RECORD}"


def test_an_elastic_job_has_no_fixed_world_size_and_the_users_env_comes_last():
    elastic = {"nodes": 2, "elastic": {"minNodes": 1, "maxNodes": 4, "keepGlobalBatch": False},
               "env": [{"name": "NCCL_DEBUG", "value": "INFO"}]}
    env = trainer_container(rendered(with_spec(resources=elastic)))["env"]
    names = [item["name"] for item in env]
    assert "WORLD_SIZE" not in names and {"name": "PET_NNODES", "value": "1:4"} in env
    assert names[-1] == "NCCL_DEBUG"


def test_cli_render_prints_exactly_what_render_job_returns(tmp_path):
    path = REPO / "examples" / "dpo-from-sft.yaml"
    result = CliRunner().invoke(main, ["render", str(path), "--uid", UID])
    assert result.exit_code == 0, result.output
    printed = list(yaml.safe_load_all(result.output))
    documents = [d for d in yaml.safe_load_all(path.read_text())]
    outputs = {d["metadata"]["name"]: output_location(parse_job(d)) for d in documents}
    expected = [obj for d in documents for obj in rendered(d, upstream_outputs=outputs).all_objects()]
    assert printed == expected


def test_cli_render_refuses_an_invalid_job(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(with_spec(resources={"nodes": 0})))
    result = CliRunner().invoke(main, ["render", str(path)])
    assert result.exit_code == 1 and f"{path}: spec.resources.nodes:" in result.output


FORBIDDEN_IN_THE_CORE = {"kopf", "kubernetes", "subprocess", "socket", "requests", "urllib", "http", "os"}


@pytest.mark.parametrize("package", ["render", "lifecycle"])
def test_the_functional_core_does_no_io(package):
    folder = REPO / "operator" / "kubetune" / package
    for source in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in FORBIDDEN_IN_THE_CORE, f"{source} imports {name}"


def test_operator_gpu_defaults_apply_only_to_gpu_pods_the_job_does_not_place():
    settings = RenderSettings(gpu_node_selector={"pool": "h100"},
                              gpu_tolerations=({"key": "ml", "operator": "Exists", "effect": "NoSchedule"},))
    gpu = rendered(with_spec(resources={"gpusPerNode": 8}), settings=settings)
    pod = gpu.stateful_set["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"pool": "h100"}
    assert [t["key"] for t in pod["tolerations"]] == ["ml", "nvidia.com/gpu"]
    assert gpu.evaluation_job["spec"]["template"]["spec"]["nodeSelector"] == {"pool": "h100"}
    placed = rendered(with_spec(resources={"gpusPerNode": 8, "nodeSelector": {"pool": "mine"}}), settings=settings)
    assert placed.stateful_set["spec"]["template"]["spec"]["nodeSelector"] == {"pool": "mine"}
    cpu = rendered(with_spec(resources={"gpusPerNode": 0}), settings=settings).stateful_set["spec"]["template"]["spec"]
    assert not cpu.get("nodeSelector") and not cpu.get("tolerations")


def test_operator_resource_defaults_fill_only_what_the_job_leaves_out():
    settings = RenderSettings(trainer_resources={"requests": {"cpu": "4", "memory": "16Gi"},
                                                 "limits": {"memory": "32Gi", "ephemeral-storage": "50Gi"}})
    job = with_spec(resources={"requests": {"memory": "64Gi"}, "limits": {"cpu": "16"}})
    resources = trainer_container(rendered(job, settings=settings))["resources"]
    # memory and cpu are the job's own (a default 32Gi limit under its 64Gi request would be invalid).
    assert resources == {"requests": {"memory": "64Gi"},
                         "limits": {"cpu": "16", "ephemeral-storage": "50Gi"}}
    assert trainer_container(rendered(with_spec(), settings=settings))["resources"] == settings.trainer_resources


def test_a_job_that_publishes_gets_a_publish_job_on_the_trainer_image_retried_per_backoff_limit():
    job = with_spec(output={"publish": [{"target": "s3://models/demo"}]}, runPolicy={"backoffLimit": 5})
    objects = rendered(job)
    publish = objects.publish_job
    assert publish["metadata"]["name"] == "demo-publish" and publish["spec"]["backoffLimit"] == 5
    container = publish["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["python", "-m", "trainer_entrypoint", "publish"]
    assert container["image"] == objects.stateful_set["spec"]["template"]["spec"]["containers"][0]["image"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    config = TrainerConfig.decode(objects.config_map["data"][contract.CONFIG_FILE])
    assert [(t.target, t.when, t.private) for t in config.output.publish] == [("s3://models/demo", "gatesPassed", True)]
    assert rendered(with_spec()).publish_job is None



def test_a_pvc_publish_target_is_mounted_writable_in_the_publish_job_only():
    job = with_spec(output={"publish": [{"target": "pvc://models/runs/demo"}, {"target": "s3://models/demo"}]})
    objects = rendered(job)
    spec = objects.publish_job["spec"]["template"]["spec"]
    assert {"name": "publish-models", "persistentVolumeClaim": {"claimName": "models"}} in spec["volumes"]
    assert {"name": "publish-models", "mountPath": f"{contract.PUBLISH_DIR}/models"} in spec["containers"][0][
        "volumeMounts"]
    assert "publish-models" not in json.dumps(objects.stateful_set)
    config = TrainerConfig.decode(objects.config_map["data"][contract.CONFIG_FILE])
    assert [t.path for t in config.output.publish] == [f"{contract.PUBLISH_DIR}/models/runs/demo", None]
