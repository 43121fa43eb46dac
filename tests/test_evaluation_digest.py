"""spec.evaluation's digest names the evaluation Job and its report: a digest that changed for
an unchanged spec would evaluate every finished job again after an upgrade. The literals were
computed by the digest before EvaluationSpec shared its fields with the contract (which
reordered them), and must never change."""

from kubetune.api.models import EvaluationSpec

FULL = {
    "enabled": False, "engine": "transformers",
    "dataset": {"source": "hf://org/evaldata", "name": "main", "split": "test", "evalSplit": "validation",
                "format": "humaneval", "maxSamples": 200},
    "sampling": {"n": 8, "temperature": 0.7, "topP": 0.95, "maxTokens": 512, "seed": 3},
    "metrics": ["pass@1", "pass@8", "loss"], "compareBase": True,
    "gates": [{"metric": "pass@1", "minDelta": 0.0, "confident": True}, {"metric": "loss", "max": 2.5}],
    "onRegression": "fail", "timeoutSecondsPerSample": 2.5,
    "resources": {"gpus": 2, "image": "x/y:1"},
}


def test_the_digest_of_a_spec_is_the_one_earlier_operators_computed():
    assert EvaluationSpec().digest() == "7c3d5fef"
    assert EvaluationSpec.model_validate(FULL).digest() == "df7379bf"


def test_where_the_evaluation_runs_is_not_digested():
    placed = {**FULL, "enabled": True, "resources": {"gpus": 0, "nodeSelector": {"pool": "eval"}}}
    assert EvaluationSpec.model_validate(placed).digest() == "df7379bf"


def test_every_setting_of_what_is_evaluated_is_digested():
    edits = {"engine": "vllm", "sampling": {"n": 8, "seed": 4}, "metrics": ["pass@1"], "compareBase": False,
             "gates": [], "onRegression": "keep", "timeoutSecondsPerSample": 3.0,
             "dataset": {"source": "hf://org/other"}}
    digests = {name: EvaluationSpec.model_validate({**FULL, name: value}).digest() for name, value in edits.items()}
    assert "df7379bf" not in digests.values() and len(set(digests.values())) == len(edits)


def test_a_new_setting_must_be_placed_in_the_digest_or_left_out_on_purpose():
    assert set(EvaluationSpec.DIGESTED) == set(EvaluationSpec.model_fields) - {"enabled", "resources"}
