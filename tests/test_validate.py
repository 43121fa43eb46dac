"""`kubetune validate`: examples pass, a pasted TRL config passes, bad specs name their field."""

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from conftest import EXAMPLES, MINIMAL_JOB, REPO, with_spec
from kubetune import contract
from kubetune.api.validation import InvalidJob, parse_job
from kubetune.cli import main
from kubetune.contract.config import TrainerConfig
from kubetune.render import render_job

# A TRL sft_config.yaml as TRL's docs write it (the `trl sft --config` file), pasted verbatim.
TRL_SFT_CONFIG = """
learning_rate: 2.0e-5
num_train_epochs: 1
per_device_train_batch_size: 2
gradient_accumulation_steps: 8
gradient_checkpointing: true
packing: true
max_length: 1024
lr_scheduler_type: cosine_with_min_lr
lr_scheduler_kwargs:
  min_lr_rate: 0.1
warmup_steps: 0.03
logging_steps: 25
eval_strategy: steps
eval_steps: 100
report_to: none
seed: 42
"""


def run_cli(*args):
    result = CliRunner().invoke(main, list(args))
    # A traceback would surface as an exception other than the CLI's own exit.
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    return result


def test_every_example_is_valid():
    result = run_cli("validate", *map(str, EXAMPLES))
    assert result.exit_code == 0, result.output
    assert result.output.count("is valid") >= len(EXAMPLES)


def test_console_script_validates_examples():
    script = Path(sys.executable).parent / "kubetune"
    completed = subprocess.run(
        [str(script), "validate", *map(str, EXAMPLES)],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )
    assert completed.returncode == 0, completed.stderr


def test_trl_sft_config_is_accepted_verbatim():
    training = yaml.safe_load(TRL_SFT_CONFIG)
    job = parse_job(with_spec(method="sft", training=training))
    assert job.spec.training == training


def test_trl_numbers_written_as_strings_are_accepted():
    # TRL's YAML loader passes values through argparse, so "2e-5" works there too: TRL gets the number.
    job = parse_job(with_spec(training={"learning_rate": "2e-5", "num_train_epochs": "3"}))
    config = TrainerConfig.decode(render_job(job).config_map["data"][contract.CONFIG_FILE])
    assert (config.training["learning_rate"], config.training["num_train_epochs"]) == (2e-5, 3)
    assert isinstance(config.training["learning_rate"], float)


def test_unknown_trl_key_is_refused_by_name(tmp_path):
    training = yaml.safe_load(TRL_SFT_CONFIG) | {"learning_rat": 1e-5}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(with_spec(training=training)))
    result = run_cli("validate", str(path))
    assert result.exit_code == 1
    assert f"{path}: spec.training.learning_rat: not a field of SFTConfig" in result.output
    assert "did you mean 'learning_rate'" in result.output


def test_trl_keys_are_checked_against_the_chosen_method():
    # `beta` belongs to DPOConfig, not SFTConfig.
    parse_job(with_spec(method="dpo", training={"beta": 0.1}))
    with pytest.raises(InvalidJob, match=r"spec.training.beta: not a field of SFTConfig"):
        parse_job(with_spec(method="sft", training={"beta": 0.1}))


def _set(path, value):
    """A copy of the minimal job with the dotted path set to value (None deletes it)."""
    job = copy.deepcopy(MINIMAL_JOB)
    *parents, leaf = path.split(".")
    node = job
    for part in parents:
        node = node.setdefault(part, {})
    if value is None:
        node.pop(leaf, None)
    else:
        node[leaf] = value
    return job


INVALID_SPECS = [
    # (what is wrong, document, the field path the message must name, words of the reason)
    ("unknown top-level spec field", _set("spec.modle", {"source": "hf://x/y"}), "spec.modle", "unknown field"),
    ("missing model", _set("spec.model", None), "spec.model", "required"),
    ("unknown method", _set("spec.method", "ppo"), "spec.method", "sft"),
    ("unsupported source scheme", _set("spec.model.source", "http://example.com/m"), "spec.model.source", "hf://"),
    ("unknown dataset format", _set("spec.dataset.format", "csv"), "spec.dataset.format", "messages"),
    ("zero nodes", _set("spec.resources", {"nodes": 0}), "spec.resources.nodes", "greater than or equal to 1"),
    ("negative GPUs", _set("spec.resources", {"gpusPerNode": -1}), "spec.resources.gpusPerNode", "greater than"),
    ("bad memory quantity", _set("spec.resources", {"limits": {"memory": "lots"}}),
     "spec.resources.limits.memory", "quantity"),
    ("nodes outside the elastic range",
     _set("spec.resources", {"nodes": 5, "elastic": {"minNodes": 1, "maxNodes": 4, "keepGlobalBatch": False}}),
     "spec.resources.nodes", "elastic.minNodes..elastic.maxNodes"),
    ("a global batch that cannot be kept at every size",
     _set("spec", {**MINIMAL_JOB["spec"], "training": {"per_device_train_batch_size": 2},
                   "resources": {"nodes": 2, "elastic": {"minNodes": 1, "maxNodes": 4}}}),
     "spec.training.gradient_accumulation_steps", "elastic.keepGlobalBatch"),
    ("an unknown gate metric", _set("spec.evaluation", {"metrics": ["loss"], "gates": [{"metric": "bleu", "min": 1}]}),
     "spec.evaluation.gates[0].metric", "unknown metric"),
    ("a gate on a metric not evaluated",
     _set("spec.evaluation", {"metrics": ["loss"], "gates": [{"metric": "pass@1", "min": 0.5}]}),
     "spec.evaluation.gates", "one of spec.evaluation.metrics"),
    ("a gate with minDelta and maxDelta",
     _set("spec.evaluation", {"metrics": ["loss"], "compareBase": True,
                              "gates": [{"metric": "loss", "minDelta": -1, "maxDelta": 0}]}),
     "spec.evaluation.gates[0].minDelta", "exactly one of minDelta, maxDelta, min and max"),
    ("a delta gate without the base model",
     _set("spec.evaluation", {"metrics": ["loss"], "gates": [{"metric": "loss", "maxDelta": 0}]}),
     "spec.evaluation.gates", "set compareBase: true"),
    ("an unknown publish scheme", _set("spec.output", {"publish": [{"target": "gs://bucket/model"}]}),
     "spec.output.publish[0].target", "expected hf://<org>/<name>, s3://<bucket>/<prefix> or pvc://<claim>"),
    ("elastic min above max", _set("spec.resources", {"nodes": 2, "elastic": {"minNodes": 3, "maxNodes": 2}}),
     "spec.resources.elastic.minNodes", "must not exceed maxNodes"),
    ("more processes than GPUs", _set("spec.resources", {"gpusPerNode": 2, "processesPerNode": 4}),
     "spec.resources.processesPerNode", "cannot exceed gpusPerNode"),
    ("offload with ddp", _set("spec.distributed", {"strategy": "ddp", "offload": "optimizer"}),
     "spec.distributed.offload", "zero1, zero2, zero3 or fsdp"),
    ("parameter offload with zero2", _set("spec.distributed", {"strategy": "zero2", "offload": "all"}),
     "spec.distributed.offload", "zero3 or fsdp"),
    ("unknown strategy", _set("spec.distributed", {"strategy": "zero4"}), "spec.distributed.strategy", "zero3"),
    ("qlora on CPU", _set("spec.peft", {"method": "qlora"}), "spec.peft.method", "needs GPUs"),
    ("grpo without rewards", _set("spec.method", "grpo"), "spec.rewards", "at least one"),
    ("rewards on sft", _set("spec.rewards", [{"function": "accuracy_reward"}]), "spec.rewards", "only to methods"),
    ("reward with function and model", _set("spec", {**MINIMAL_JOB["spec"], "method": "grpo",
     "rewards": [{"function": "accuracy_reward", "model": "job://rm"}]}), "spec.rewards[0].function", "either"),
    ("unknown metric", _set("spec.evaluation", {"metrics": ["bleu"]}), "spec.evaluation.metrics[0]", "unknown metric"),
    ("pass@k beyond samples", _set("spec.evaluation", {"metrics": ["pass@10"], "sampling": {"n": 5}}),
     "spec.evaluation.metrics", "sampling.n >= 10"),
    ("reward metric without a reward model", _set("spec.evaluation", {"metrics": ["reward"]}),
     "spec.evaluation.metrics", "needs a reward model"),
    ("generation metric for a reward model", _set("spec", {**MINIMAL_JOB["spec"], "method": "reward",
     "evaluation": {"metrics": ["exact_match"]}}), "spec.evaluation.metrics", "does not generate"),
    ("top_p above 1", _set("spec.evaluation", {"sampling": {"topP": 1.5}}), "spec.evaluation.sampling.topP",
     "less than or equal to 1"),
    ("both output claim kinds", _set("spec.output", {"claimName": "models", "claimTemplate": {"size": "1Gi"}}),
     "spec.output.claimName", "not both"),
    ("negative backoff", _set("spec.runPolicy", {"backoffLimit": -1}), "spec.runPolicy.backoffLimit", "greater"),
    ("zero deadline", _set("spec.runPolicy", {"activeDeadlineSeconds": 0}), "spec.runPolicy.activeDeadlineSeconds",
     "greater"),
    ("negative progress deadline", _set("spec.runPolicy", {"progressDeadlineSeconds": -1}),
     "spec.runPolicy.progressDeadlineSeconds", "greater than or equal to 0"),
    ("negative startup deadline", _set("spec.runPolicy", {"startupDeadlineSeconds": -5}),
     "spec.runPolicy.startupDeadlineSeconds", "greater than or equal to 0"),
    ("zero scheduling timeout", _set("spec.runPolicy", {"schedulingTimeoutSeconds": 0}),
     "spec.runPolicy.schedulingTimeoutSeconds", "greater than or equal to 1"),
    ("negative disruptions", _set("spec.runPolicy", {"maxDisruptions": -1}), "spec.runPolicy.maxDisruptions",
     "greater than or equal to 0"),
    ("a deadline as a string", _set("spec.runPolicy", {"progressDeadlineSeconds": "30m"}),
     "spec.runPolicy.progressDeadlineSeconds", "expected an integer, got string '30m'"),
    ("managed TRL key", _set("spec.training", {"output_dir": "/tmp/x"}), "spec.training.output_dir",
     "use spec.output"),
    ("TRL value of the wrong type", _set("spec.training", {"num_train_epochs": "many"}),
     "spec.training.num_train_epochs", "expected number"),
    ("TRL enum typo", _set("spec.training", {"lr_scheduler_type": "cosin"}), "spec.training.lr_scheduler_type",
     "expected one of"),
    ("secret in the spec", _set("spec.training", {"hub_token": "hf_abc"}), "spec.training.hub_token",
     "spec.credentials.hfToken"),
    ("name too long", _set("metadata.name", "a" * 46), "metadata.name", "at most 45"),
    ("name with capitals", _set("metadata.name", "MyJob"), "metadata.name", "lowercase"),
    ("own output as model", _set("spec.model.source", "job://demo"), "spec.model.source", "its own output"),
    ("nodes as a string", _set("spec.resources", {"nodes": "2"}), "spec.resources.nodes",
     "expected an integer, got string '2'"),
    ("a boolean as a string", _set("spec.evaluation", {"compareBase": "yes"}), "spec.evaluation.compareBase",
     "expected a boolean, got string 'yes'"),
    ("a misspelt env field", _set("spec.resources", {"env": [{"name": "A", "vaule": "1"}]}),
     "spec.resources.env[0]", "not a valid Kubernetes EnvVar: unknown field vaule"),
    ("a toleration of the wrong type", _set("spec.resources", {"tolerations": [{"tolerationSeconds": "60"}]}),
     "spec.resources.tolerations[0]", "tolerationSeconds: '60' is not of type 'integer'"),
    ("wrong kind", _set("kind", "PyTorchJob"), "kind", "FineTuneJob"),
    ("wrong api version", _set("apiVersion", "kubeflow.org/v1"), "apiVersion", "kubetune.io/v1alpha1"),
]


@pytest.mark.parametrize("what,document,field,reason", INVALID_SPECS, ids=[s[0] for s in INVALID_SPECS])
def test_invalid_spec_names_the_field(tmp_path, what, document, field, reason):
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(document))
    result = run_cli("validate", str(path))
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.startswith(f"{path}: {field}: ")]
    assert lines, f"no problem names {field}:\n{result.output}"
    assert any(reason in line for line in lines), result.output


def test_there_are_at_least_fifteen_distinct_invalid_specs():
    assert len({field for _, _, field, _ in INVALID_SPECS}) >= 15


def test_every_problem_is_reported_at_once(tmp_path):
    document = _set("spec.resources", {"nodes": 0, "gpusPerNode": -1})
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(document))
    output = run_cli("validate", str(path)).output
    assert "spec.resources.nodes" in output and "spec.resources.gpusPerNode" in output


def alias_bomb(levels=9):
    text = 'a: &a ["x","x","x","x","x","x","x","x","x"]\n'
    for level in range(1, levels):
        previous, current = chr(ord("a") + level - 1), chr(ord("a") + level)
        text += f"{current}: &{current} [" + ",".join([f"*{previous}"] * 9) + "]\n"
    return text.encode()


@pytest.mark.parametrize(
    "content,reason",
    [
        (b"spec: [unclosed", "invalid YAML"),
        (b"", "no FineTuneJob"),
        (b"- just\n- a list\n", "expected a FineTuneJob mapping"),
        (bytes(range(256)), "not a text file (UTF-8)"),
        (b"kind: FineTuneJob\x00\n", "not a text file"),
        (b"# padding\n" * 330_000, "more than the API server takes (3 MiB)"),
        (b"[" * 50_000 + b"]" * 50_000, "nested too deeply"),
        (b"apiVersion: kubetune.io/v1alpha1\nkind: FineTuneJob\nkind: FineTuneJob\n", "duplicate key 'kind'"),
        (alias_bomb(), "expand to more than 100000 values"),
    ],
    ids=["unclosed", "empty", "a list", "binary", "NUL", "5 MB", "deep", "duplicate key", "alias bomb"],
)
def test_unreadable_files_are_reported_in_one_line_not_raised(tmp_path, content, reason):
    path = tmp_path / "job.yaml"
    path.write_bytes(content)
    result = run_cli("validate", str(path))
    assert result.exit_code == 1
    assert result.output.startswith(f"{path}: ") and reason in result.output
    assert result.output.count("\n") == 1


def test_two_jobs_of_one_name_in_a_file_are_refused(tmp_path):
    path = tmp_path / "jobs.yaml"
    path.write_text(yaml.safe_dump_all([MINIMAL_JOB, MINIMAL_JOB]))
    result = run_cli("validate", str(path))
    assert result.exit_code == 1
    assert f"{path}[2]: metadata.name: another job of this file is named demo" in result.output


def test_integers_beyond_64_bits_are_refused_naming_the_field():
    with pytest.raises(InvalidJob, match=r"spec.evaluation.sampling.seed: \d+ does not fit in a 64-bit integer"):
        parse_job(with_spec(evaluation={"sampling": {"seed": 2**64}}))


def test_missing_file_is_named(tmp_path):
    result = run_cli("validate", str(tmp_path / "nope.yaml"))
    assert result.exit_code == 1
    assert f"{tmp_path / 'nope.yaml'}: cannot read" in result.output


def test_multi_document_files_name_the_document(tmp_path):
    path = tmp_path / "jobs.yaml"
    path.write_text(yaml.safe_dump_all([MINIMAL_JOB, _set("spec.method", "ppo")]))
    result = run_cli("validate", str(path))
    assert result.exit_code == 1
    assert f"{path}[2]: spec.method:" in result.output
    assert f"{path}[1]: demo is valid" in result.output


def test_method_is_immutable_on_update():
    old = with_spec(method="sft")
    new = with_spec(method="dpo")
    with pytest.raises(InvalidJob, match="spec.method: method cannot change once the job exists"):
        parse_job(new, old_document=old)
    parse_job(old, old_document=old)


def test_nodes_change_on_update_only_for_elastic_jobs():
    old = with_spec(resources={"nodes": 2})
    with pytest.raises(InvalidJob, match="spec.resources.nodes: nodes can change while a job runs only when elastic"):
        parse_job(with_spec(resources={"nodes": 3}), old_document=old)
    elastic = {"nodes": 2, "elastic": {"minNodes": 1, "maxNodes": 4, "keepGlobalBatch": False}}
    parse_job(with_spec(resources={**elastic, "nodes": 3}), old_document=with_spec(resources=elastic))


# --- what may change on an existing job -----------------------------------------------------

RUNNING = {"resources": {"nodes": 2}, "peft": {"r": 8}, "training": {"learning_rate": 1e-4}}
FIXED_EDITS = [
    # (what is edited, the spec fields after the edit, the field the refusal names)
    ("model", {"model": {"source": "hf://org/other"}}, "spec.model"),
    ("dataset split", {"dataset": {"source": "builtin://tiny", "split": "other"}}, "spec.dataset"),
    ("a TRL key", {"training": {"learning_rate": 2e-4}}, "spec.training"),
    ("LoRA rank", {"peft": {"r": 16}}, "spec.peft"),
    ("LoRA removed", {"peft": None}, "spec.peft"),
    ("strategy", {"distributed": {"strategy": "zero3"}}, "spec.distributed"),
    ("GPUs per node", {"resources": {"nodes": 2, "gpusPerNode": 1}}, "spec.resources.gpusPerNode"),
    ("image", {"resources": {"nodes": 2, "image": "registry/trainer:2"}}, "spec.resources.image"),
    ("env", {"resources": {"nodes": 2, "env": [{"name": "NCCL_DEBUG", "value": "INFO"}]}}, "spec.resources.env"),
    ("fixed node count", {"resources": {"nodes": 3}}, "spec.resources.nodes"),
    ("checkpointing", {"checkpointing": {"everySteps": 10}}, "spec.checkpointing"),
    ("output claim", {"output": {"claimName": "models"}}, "spec.output"),
    ("credentials", {"credentials": {"s3SecretName": "s3"}}, "spec.credentials"),
]
ALLOWED_EDITS = [
    ("suspend", {"runPolicy": {"suspend": True}}),
    ("deadline, TTL and backoff", {"runPolicy": {"activeDeadlineSeconds": 60, "ttlSecondsAfterFinished": 5,
                                                 "backoffLimit": 9}}),
    ("evaluation", {"evaluation": {"metrics": ["loss", "exact_match"], "compareBase": True}}),
]


def edited(**changes):
    spec = {**RUNNING, **changes}
    return with_spec(**{key: value for key, value in spec.items() if value is not None})


@pytest.mark.parametrize("what,changes,field", FIXED_EDITS, ids=[e[0] for e in FIXED_EDITS])
def test_an_edit_that_cannot_take_effect_is_refused_naming_the_field(what, changes, field):
    with pytest.raises(InvalidJob) as refused:
        parse_job(edited(**changes), old_document=edited())
    messages = [str(problem) for problem in refused.value.problems if problem.path == field]
    assert messages, refused.value.problems
    assert "create a new job" in messages[0] or "elastic" in messages[0]


@pytest.mark.parametrize("what,changes", ALLOWED_EDITS, ids=[e[0] for e in ALLOWED_EDITS])
def test_run_policy_and_evaluation_may_change(what, changes):
    parse_job(edited(**changes), old_document=edited())


def test_an_elastic_job_may_be_resized_and_nothing_else_of_its_resources():
    elastic = {"nodes": 2, "elastic": {"minNodes": 1, "maxNodes": 4, "keepGlobalBatch": False}}
    parse_job(edited(resources={**elastic, "nodes": 4}), old_document=edited(resources=elastic))
    with pytest.raises(InvalidJob, match="spec.resources.elastic: elastic cannot change"):
        parse_job(edited(resources={**elastic, "elastic": {"minNodes": 1, "maxNodes": 8}}),
                  old_document=edited(resources=elastic))


# --- the env a job may not set --------------------------------------------------------------


@pytest.mark.parametrize("name", ["PET_NNODES", "MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "NODE_RANK", "RANK",
                                  "LOCAL_RANK", "KUBETUNE_CONFIG", "TORCHELASTIC_RUN_ID"])
def test_reserved_env_is_refused_naming_the_field_and_the_variable(tmp_path, name):
    env = [{"name": "NCCL_DEBUG", "value": "INFO"}, {"name": name, "value": "1"}]
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(with_spec(resources={"env": env})))
    result = run_cli("validate", str(path))
    assert result.exit_code == 1
    assert f"{path}: spec.resources.env: env {name} is set by kubetune" in result.output


def test_an_ordinary_env_variable_is_fine():
    parse_job(with_spec(resources={"env": [{"name": "NCCL_DEBUG", "value": "INFO"}, {"name": "RANKING", "value": "x"},
                                           {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf",
                                                                                              "key": "t"}}}]}))


def test_the_kept_global_batch_must_split_at_every_node_count_and_nodes_may_change():
    def job(nodes, accumulation, keep=True):
        return with_spec(training={"per_device_train_batch_size": 2, "gradient_accumulation_steps": accumulation},
                         resources={"nodes": nodes, "elastic": {"minNodes": 1, "maxNodes": 4, "keepGlobalBatch": keep}})

    with pytest.raises(InvalidJob) as refused:
        parse_job(job(2, 1))
    message = str(refused.value)
    for words in ("per_device_train_batch_size 2", "gradient_accumulation_steps 1", "elastic.maxNodes 4 = 8",
                  "at 3 node(s)", "keepGlobalBatch: false"):
        assert words in message, message
    parse_job(job(2, 1, keep=False))  # the per-device batch is kept instead
    # Anchored at maxNodes, which cannot change: any resize of a valid job stays valid.
    for nodes in range(1, 5):
        parse_job(job(nodes, 3), old_document=job(2, 3))
