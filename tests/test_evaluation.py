"""Evaluation: metric arithmetic, the code sandbox, and the evaluator command end to end with
vLLM (CPU build) and transformers on tiny models trained here."""

import contextlib
import json
import math
import os
import socket
import subprocess
import sys

import pytest

from conftest import with_spec
from kubetune import contract
from kubetune.contract.evaluation import EvaluationSummary
from kubetune.contract.failure import FailureReport
from local_pods import map_paths, rendered_config, write_local_config
from trainer_entrypoint import code_samples
from trainer_entrypoint.evaluate import scoring
from trainer_entrypoint.evaluate.code_checks import AppsTask, HumanEvalTask, apps_passes, apps_task, humaneval_passes
from trainer_entrypoint.evaluate.metrics import score_model
from trainer_entrypoint.evaluate.scoring import Rows
from trainer_entrypoint.evaluate.report import ModelRun, combine, summary
from trainer_entrypoint.evaluate.sandbox import run_program
from trainer_entrypoint.sources import model_reference
from trainer_entrypoint.train.worker import train

EVALUATOR_TIMEOUT = 420


# --- metric arithmetic ----------------------------------------------------------------------


def reference_pass_at_k(n, c, k):
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


@pytest.mark.parametrize("n,c,k", [(1, 0, 1), (1, 1, 1), (5, 0, 1), (5, 2, 1), (5, 2, 3), (5, 5, 5), (10, 1, 10),
                                   (10, 3, 5), (20, 7, 1), (20, 7, 10), (100, 13, 10), (200, 150, 100)])
def test_pass_at_k_agrees_with_the_reference_estimator(n, c, k):
    assert scoring.pass_at_k(n, c, k) == pytest.approx(reference_pass_at_k(n, c, k), abs=1e-12)


def test_pass_at_k_needs_k_samples():
    with pytest.raises(ValueError, match="pass@5"):
        scoring.pass_at_k(3, 1, 5)


def test_answer_matching():
    assert scoring.exact_match("  3 plus 4 is 7. ", "3 plus 4 is 7.") == 1.0
    assert scoring.exact_match("so the answer is \\boxed{\\frac{1}{2}}", "\\frac{1}{2}") == 1.0
    assert scoring.exact_match("3 plus 4 is 8.", "3 plus 4 is 7.") == 0.0
    assert scoring.contains("well, 3 plus 4 is 7. done", "3 plus 4 is 7.") == 1.0
    assert scoring.contains("anything", "") == 0.0


def test_means_are_grouped_by_difficulty():
    means = scoring.means_by_group([("easy", 1.0), ("easy", 0.0), ("hard", 0.0), (None, 1.0)])
    assert means == {"all": 0.5, "easy": 0.5, "hard": 0.0}


# --- the sandbox and code tasks ---------------------------------------------------------------


def humaneval_tasks():
    return [(HumanEvalTask(r["prompt"], r["test"], r["entry_point"]), r) for r in code_samples.HUMANEVAL]


@pytest.mark.parametrize("task,row", humaneval_tasks(), ids=[r["task_id"] for r in code_samples.HUMANEVAL])
def test_bundled_humaneval_canonical_solution_passes_and_a_wrong_one_fails(task, row):
    assert humaneval_passes(task, row["canonical_solution"], timeout=10)
    assert not humaneval_passes(task, "    return None\n", timeout=10)


def code_samples_as_samples(completions_of):
    """Samples of the bundled HumanEval set and a ModelRun whose completions come from completions_of(row)."""
    from trainer_entrypoint.evaluate.samples import Sample

    samples, run = [], ModelRun()
    for index, (task, row) in enumerate(humaneval_tasks()):
        samples.append(Sample(index, row["prompt"], [0], code=task, group=row["difficulty"]))
        run.completions[index] = completions_of(row)
    return samples, run


def test_pass_at_1_of_canonical_solutions_is_one_and_of_wrong_ones_zero():
    samples, right = code_samples_as_samples(lambda row: [row["canonical_solution"]] * 2)
    _, wrong = code_samples_as_samples(lambda row: ["    return None\n", "    pass\n"])
    _, mixed = code_samples_as_samples(lambda row: [row["canonical_solution"], "    return None\n"])
    metrics = ["pass@1", "pass@2"]
    assert score_model(samples, right, metrics, timeout=10)["pass@1"] == {"all": 1.0, "easy": 1.0, "medium": 1.0}
    assert score_model(samples, wrong, metrics, timeout=10)["pass@2"] == {"all": 0.0, "easy": 0.0, "medium": 0.0}
    scores = score_model(samples, mixed, metrics, timeout=10)
    assert scores["pass@1"]["all"] == pytest.approx(0.5) and scores["pass@2"]["all"] == 1.0
    assert mixed.scores[0]["passed"] == [True, False]


ESCAPES = {
    "infinite loop": "    while True:\n        pass\n",
    "sys.exit before the tests": "    import sys\n    sys.exit(0)\n",
    "os._exit before the tests": "    import os\n    os._exit(0)\n",
    "SystemExit": "    raise SystemExit\n",
    "memory bomb": "    x = bytearray(16 * 1024 ** 3)\n    return a + b\n",
}


@pytest.mark.parametrize("body", ESCAPES.values(), ids=list(ESCAPES))
def test_runaway_candidates_are_contained_and_fail(body):
    task = HumanEvalTask(code_samples.HUMANEVAL[0]["prompt"], code_samples.HUMANEVAL[0]["test"], "add")
    assert not humaneval_passes(task, body, timeout=3)


def test_an_infinite_loop_is_killed_at_the_time_limit():
    outcome = run_program("import subprocess\nsubprocess.Popen(['sleep', '60'])\nwhile True:\n    pass\n", timeout=2)
    assert outcome.timed_out
    leftover = subprocess.run(["pgrep", "-f", "^sleep 60$"], capture_output=True, text=True).stdout.split()
    assert leftover == []


def test_candidates_have_no_network_and_no_secrets(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "secret-token")
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        program = (f"import os, socket\nprint(os.environ.get('HF_TOKEN'))\n"
                   f"socket.create_connection(('127.0.0.1', {port}), timeout=2)\nprint('connected')\n")
        outcome = run_program(program, timeout=10)
    assert outcome.stdout.split() == ["None"]
    assert outcome.returncode != 0 and "connected" not in outcome.stdout


def test_apps_tasks_run_stdin_and_call_cases():
    for row in code_samples.APPS:
        task = apps_task(row)
        assert apps_passes(task, f"```python\n{json.loads(row['solutions'])[0]}```", timeout=10), row["question"]
        assert not apps_passes(task, "print(42)\n", timeout=10)
    assert not apps_passes(AppsTask(inputs=[], outputs=[]), "print(1)", timeout=10)


# --- summary and report -------------------------------------------------------------------------


# What each metric of a summary holds when the base model was evaluated too.
WITH_BASE = {"tuned", "base", "delta", "tunedInterval", "baseInterval", "deltaInterval", "rows"}


def rows(*values, exponentiated=False):
    """A metric's rows: (group, value) each, indexed in order, so two models' rows pair up."""
    return Rows({index: (group, value, 1.0) for index, (group, value) in enumerate(values)}, exponentiated)


def test_summary_carries_base_and_groups_and_the_operator_reads_it():
    metrics = combine({"tuned": {"pass@1": rows(("easy", 1.0), ("hard", 0.0)), "loss": rows((None, 1.25))},
                       "base": {"pass@1": rows(("easy", 0.5), ("hard", 0.0)), "loss": rows((None, 2.0))}})
    assert metrics["pass@1"].wire()["byGroup"]["easy"] == {"tuned": 1.0, "base": 0.5, "delta": 0.5}
    message = summary(metrics, "/output/evaluation/report.json")
    read = EvaluationSummary.read(message)
    assert read.metrics["loss"].wire() == {"tuned": 1.25, "base": 2.0, "delta": -0.75, "tunedInterval": [1.25, 1.25],
                                           "baseInterval": [2.0, 2.0], "deltaInterval": [-0.75, -0.75], "rows": 1}
    assert read.metrics["pass@1"].rows == 2 and read.metrics["pass@1/easy"].delta == 0.5
    assert read.report == "/output/evaluation/report.json"


def test_summary_drops_groups_rather_than_overflowing_the_termination_message():
    many = rows(*((f"group-{i:03d}", 0.5) for i in range(300)))
    message = summary(combine({"tuned": {"pass@1": many}}), "/output/evaluation/report.json")
    assert len(message) <= 4000
    assert json.loads(message)["metrics"] == {"pass@1": {"tuned": 0.5, "tunedInterval": [0.5, 0.5], "rows": 300}}
    assert json.loads(message)["report"] == "/output/evaluation/report.json"


# --- the evaluator command, end to end ----------------------------------------------------------

SFT_TRAINING = {"max_steps": 80, "per_device_train_batch_size": 8, "learning_rate": 2.0e-2, "max_length": 64,
                "logging_steps": 20}
ARITHMETIC = {"metrics": ["loss", "perplexity", "exact_match", "contains"], "compareBase": True,
              "sampling": {"maxTokens": 16}}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Tiny SFT jobs trained once for this module: a LoRA one and a full fine-tune; {name: (document, root)}."""
    os.environ["KUBETUNE_METRICS_PORT"] = "0"
    jobs = {
        "lora": with_spec(training=SFT_TRAINING, peft={"r": 8, "alpha": 16}),
        "full": with_spec(training={**SFT_TRAINING, "max_steps": 40, "learning_rate": 1.0e-3}),
        "reward": with_spec(method="reward", training={"max_steps": 3, "per_device_train_batch_size": 4,
                                                       "max_length": 64}),
    }
    trained_jobs = {}
    for name in ["lora", "full", "reward", "grpo"]:
        document = jobs[name]
        root = tmp_path_factory.mktemp(f"trained-{name}")
        _, config = write_local_config(document, root)
        train(config, progress_server=False)
        trained_jobs[name] = (document, root)
        if name == "reward":  # the GRPO job's reward model is the one just trained
            jobs["grpo"] = with_spec(method="grpo", training={"max_steps": 2, "per_device_train_batch_size": 4,
                                                              "num_generations": 4, "max_completion_length": 8},
                                     rewards=[{"function": "answer_match"}, {"model": config.output.model}])
    return trained_jobs


def evaluate(trained_job, name, evaluation, peft=None):
    """Run `python -m trainer_entrypoint evaluate` as the evaluation pod does, with this evaluation
    spec against the trained job; (exit code, termination message, report or None, output)."""
    document, root = trained_job
    spec = {**document["spec"], "evaluation": evaluation}
    if peft is not None:
        spec["peft"] = peft
    _, config = rendered_config({**document, "spec": spec})
    config = map_paths(config, root)
    config.output.evaluation = str(root / f"evaluation-{name}")  # one folder per run of this test
    config_file = root / f"config-{name}.json"
    config_file.write_text(config.encode())
    termination = root / f"termination-{name}"
    env = {**os.environ, contract.ENV_CONFIG: str(config_file), contract.ENV_TERMINATION_LOG: str(termination)}
    process = subprocess.run([sys.executable, "-m", "trainer_entrypoint", "evaluate"], env=env,
                             capture_output=True, text=True, timeout=EVALUATOR_TIMEOUT)
    message = termination.read_text() if termination.exists() else ""
    report_file = root / f"evaluation-{name}" / "report.json"
    report = json.loads(report_file.read_text()) if report_file.exists() else None
    return process.returncode, message, report, process.stdout + process.stderr


def generations(report):
    with open(report["generations"]) as handle:
        return [json.loads(line) for line in handle]


@pytest.fixture(scope="module")
def lora_on_both_engines(trained):
    return {engine: evaluate(trained["lora"], engine, {**ARITHMETIC, "engine": engine})
            for engine in ("vllm", "transformers")}


def test_vllm_evaluates_a_lora_job_against_its_base(lora_on_both_engines):
    code, message, report, output = lora_on_both_engines["vllm"]
    assert code == 0, output[-3000:]
    summary_metrics = json.loads(message)["metrics"]
    assert set(summary_metrics) == set(ARITHMETIC["metrics"])
    for values in summary_metrics.values():
        assert set(values) == WITH_BASE
        low, high = values["deltaInterval"]
        assert low <= values["delta"] <= high and values["rows"] == 32
    assert summary_metrics["loss"]["tuned"] < summary_metrics["loss"]["base"]  # trained beats untrained
    assert summary_metrics["perplexity"]["tuned"] == pytest.approx(math.exp(summary_metrics["loss"]["tuned"]))
    assert report["engine"] == "vllm" and report["dataset"]["rows"] == 32
    rows = generations(report)
    assert len(rows) == 32 and all(len(row["tuned"]["completions"]) == 1 for row in rows)
    assert any(row["tuned"]["completions"] != row["base"]["completions"] for row in rows)


# Two engines may round a near tie of the two best next tokens either way; anything wider is a
# real disagreement. fp32 logits of the two engines differ by about 1e-4 here.
NEAR_TIE = 0.02


def departs_only_at_a_near_tie(model, tokenizer, prompt_ids, other_text, max_tokens):
    """Follow transformers' greedy path from the prompt until its text departs from other_text
    (the other engine's completion); True when a step up to there had a near tie."""
    import torch

    ids, generated = list(prompt_ids), []
    with torch.no_grad():
        for _ in range(max_tokens):
            logprobs = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0, -1].float(), dim=-1)
            best, second = torch.topk(logprobs, 2).values.tolist()
            if best - second < NEAR_TIE:
                return True
            token = int(logprobs.argmax())
            ids.append(token)
            generated.append(token)
            if not other_text.startswith(tokenizer.decode(generated, skip_special_tokens=True)):
                return False
            if token == tokenizer.eos_token_id:
                return False
    return False


def test_greedy_generations_agree_on_vllm_and_transformers_except_at_near_ties(trained, lora_on_both_engines):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainer_entrypoint.evaluate.samples import Encoder

    (_, _, vllm, _), (code, message, transformers, output) = (lora_on_both_engines[e] for e in ("vllm", "transformers"))
    assert code == 0, output[-3000:]
    assert vllm["metrics"]["loss"] == transformers["metrics"]["loss"]
    document, root = trained["lora"]
    config = map_paths(rendered_config(document)[1], root)
    tokenizer = AutoTokenizer.from_pretrained(config.output.model)
    base = AutoModelForCausalLM.from_pretrained(model_reference(config.model.location, "builtin://tiny"))
    model = PeftModel.from_pretrained(base, config.output.model).eval()
    encoder, max_tokens = Encoder(tokenizer), ARITHMETIC["sampling"]["maxTokens"]
    rows, disagreements = 0, []
    for a, b in zip(generations(vllm), generations(transformers), strict=True):
        for label in ("tuned", "base"):
            rows += 1
            [vllm_text], [transformers_text] = a[label]["completions"], b[label]["completions"]
            if vllm_text == transformers_text:
                continue
            disagreements.append((a["prompt"], label))
            adapter = contextlib.nullcontext() if label == "tuned" else model.disable_adapter()
            with adapter:
                assert departs_only_at_a_near_tie(model, tokenizer, encoder.prompt(a["prompt"]), vllm_text,
                                                  max_tokens), (label, a["prompt"], vllm_text, transformers_text)
    assert len(disagreements) <= rows // 8, disagreements


def test_merged_adapter_scores_like_the_served_adapter(trained, lora_on_both_engines):
    code, _, merged, output = evaluate(trained["lora"], "merged", {**ARITHMETIC, "engine": "transformers"},
                                       peft={"r": 8, "alpha": 16, "mergeForEvaluation": True})
    assert code == 0, output[-3000:]
    served = lora_on_both_engines["transformers"][2]
    assert merged["metrics"]["loss"]["tuned"] == pytest.approx(served["metrics"]["loss"]["tuned"], rel=1e-4)
    assert "merged the adapter" in output


def test_vllm_evaluates_a_full_fine_tune_and_its_base_on_code(trained):
    evaluation = {"engine": "vllm", "metrics": ["pass@1", "pass@2", "loss"], "compareBase": True,
                  "dataset": {"source": "builtin://tiny", "split": "test", "format": "humaneval"},
                  "sampling": {"n": 2, "temperature": 0.8, "topP": 0.95, "maxTokens": 24, "seed": 1}}
    code, message, report, output = evaluate(trained["full"], "humaneval", evaluation)
    assert code == 0, output[-3000:]
    pass_at_1 = report["metrics"]["pass@1"]
    assert set(pass_at_1["byGroup"]) == {"easy", "medium"}
    assert 0.0 <= pass_at_1["tuned"] <= 1.0 and 0.0 <= pass_at_1["base"] <= 1.0
    assert report["sandbox"] in ("network-namespace", "python-socket-guard")
    rows = generations(report)
    assert all(len(row["tuned"]["completions"]) == 2 and len(row["tuned"]["passed"]) == 2 for row in rows)
    assert not any("\ndef " in c for row in rows for c in row["tuned"]["completions"])  # stop strings applied
    assert set(json.loads(message)["metrics"]) >= {"pass@1", "pass@2", "loss", "pass@1/easy"}


def test_a_reward_model_is_evaluated_on_preference_pairs(trained):
    code, message, report, output = evaluate(trained["reward"], "reward",
                                             {"metrics": ["loss", "reward"], "compareBase": True})
    assert code == 0, output[-3000:]
    metrics = json.loads(message)["metrics"]
    assert metrics["loss"]["tuned"] > 0 and set(metrics["reward"]) == WITH_BASE
    assert report["engine"] == "transformers"
    assert set(generations(report)[0]["tuned"]) >= {"chosen", "rejected"}


def test_grpo_generations_are_scored_by_the_jobs_reward_model(trained):
    evaluation = {"engine": "transformers", "metrics": ["reward", "contains"], "compareBase": True,
                  "sampling": {"n": 2, "temperature": 1.0, "maxTokens": 8}}
    code, message, report, output = evaluate(trained["grpo"], "grpo", evaluation)
    assert code == 0, output[-3000:]
    assert set(json.loads(message)["metrics"]["reward"]) == WITH_BASE
    rows = generations(report)
    assert all(len(row["tuned"]["completions"]) == 2 and "reward" in row["tuned"] for row in rows)
    # Scored by the job's reward model: the same number from that model loaded here.
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    reward_model = json.loads((trained["grpo"][1] / "config" / "config.json").read_text())["rewards"][1]["location"]
    model = AutoModelForSequenceClassification.from_pretrained(reward_model["ref"]).eval()
    tokenizer = AutoTokenizer.from_pretrained(reward_model["ref"])
    row = rows[0]
    texts = [tokenizer.apply_chat_template(row["prompt"] + [{"role": "assistant", "content": c}], tokenize=False)
             for c in row["tuned"]["completions"]]
    with torch.no_grad():
        scores = [float(model(**tokenizer(t, return_tensors="pt")).logits[0, 0]) for t in texts]
    assert row["tuned"]["reward"] == pytest.approx(sum(scores) / len(scores), rel=1e-4)


def test_a_metric_the_data_cannot_give_fails_permanently_naming_the_field(trained):
    code, message, report, _ = evaluate(trained["full"], "unfit", {"metrics": ["pass@1"], "engine": "vllm"})
    assert code == contract.EXIT_PERMANENT and report is None
    failure = FailureReport.read(message)
    assert failure.reason == "PermanentError"
    assert failure.message.startswith("spec.evaluation.metrics: pass@1 needs code tests")
