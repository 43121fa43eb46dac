"""The chart's alert rules (an opt-in PrometheusRule), checked by the real promtool: they
parse, each fires on a synthetic series of a job in trouble and stays quiet on a healthy one,
and they name only metrics the operator exports."""

import re
import shutil
import subprocess

import pytest
import yaml

from kubetune.handlers.metrics import OperatorMetrics
from test_chart import template

PROMTOOL = shutil.which("promtool")


@pytest.fixture(scope="module")
def rules(tmp_path_factory):
    """The rule groups the chart renders, as a Prometheus rules file."""
    assert PROMTOOL, "promtool is missing: install Debian's prometheus package (make test does)"
    (rule,) = [d for d in template("helm4", "alerts") if d["kind"] == "PrometheusRule"]
    path = tmp_path_factory.mktemp("alerts") / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    return path, {r["alert"]: r for r in rule["spec"]["groups"][0]["rules"]}


def promtool(*args):
    return subprocess.run([PROMTOOL, *map(str, args)], capture_output=True, text=True, timeout=60)


def test_the_rules_pass_promtool_check(rules):
    result = promtool("check", "rules", rules[0])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 5 rules found" in result.stdout


def test_every_metric_an_alert_names_is_exported_by_the_operator(rules):
    exported = set()
    for family in OperatorMetrics().registry.collect():
        exported |= {sample_name for sample_name in [family.name, f"{family.name}_total", f"{family.name}_count"]}
    named = {name for rule in rules[1].values() for name in re.findall(r"kubetune_\w+", rule["expr"])}
    assert named and named <= exported, named - exported


def expected(rule, namespace="ml", job="stuck", value=None):
    """The alert as promtool reports it: the rule's labels and its annotations filled in."""
    def fill(text):
        text = text.replace("{{ $labels.namespace }}", namespace).replace("{{ $labels.job }}", job)
        return text.replace("{{ $value }}", str(value))

    labels = {**rule["labels"], **({"namespace": namespace, "job": job} if "job" in rule["expr"] else {})}
    return {"exp_labels": labels, "exp_annotations": {k: fill(v) for k, v in rule["annotations"].items()}}


def series(name, values, job="stuck", **labels):
    selector = ",".join(f'{k}="{v}"' for k, v in {"namespace": "ml", "job": job, **labels}.items())
    return {"series": f"{name}{{{selector}}}", "values": values}


def test_each_alert_fires_on_a_job_in_trouble_and_not_on_a_healthy_one(rules, tmp_path):
    path, by_name = rules
    restarts = series("kubetune_job_restarts", "0 1 2 3 4 4 4 4")
    tests = [
        ([series("kubetune_job_stalled", "0 1x10"), series("kubetune_job_stalled", "0x10", job="healthy")],
         "KubetuneJobStalled", "8m", [expected(by_name["KubetuneJobStalled"])]),
        ([series("kubetune_job_phase", "1x70", phase="Pending"),
          series("kubetune_job_phase", "1x70", job="healthy", phase="Training")],
         "KubetuneJobPending", "65m", [expected(by_name["KubetuneJobPending"])]),
        ([series("kubetune_job_phase", "1x70", phase="Pending")], "KubetuneJobPending", "50m", []),
        ([restarts, series("kubetune_job_restarts", "0 0 0 1 1 1 1 1", job="healthy")],
         "KubetuneJobRestarting", "7m", [expected(by_name["KubetuneJobRestarting"], value=4)]),
        ([series("kubetune_job_phase", "1x5", phase="Failed"),
          series("kubetune_job_phase", "1x5", job="healthy", phase="Succeeded")],
         "KubetuneJobFailed", "2m", [expected(by_name["KubetuneJobFailed"])]),
        # The resync loop's heartbeat stops moving at 300 s; with 600 s allowed and 5 minutes of
        # grace, the alert fires from the 20th minute and not before.
        ([{"series": "kubetune_resync_last_success_timestamp_seconds", "values": "0+60x5 300x40"}],
         "KubetuneOperatorNotReconciling", "21m", [expected(by_name["KubetuneOperatorNotReconciling"])]),
        ([{"series": "kubetune_resync_last_success_timestamp_seconds", "values": "0+60x40"}],
         "KubetuneOperatorNotReconciling", "21m", []),
    ]
    document = {"rule_files": [str(path)], "evaluation_interval": "1m", "tests": [
        {"interval": "1m", "input_series": inputs,
         "alert_rule_test": [{"eval_time": at, "alertname": alert, "exp_alerts": alerts}]}
        for inputs, alert, at, alerts in tests]}
    spec = tmp_path / "tests.yaml"
    spec.write_text(yaml.safe_dump(document))
    result = promtool("test", "rules", spec)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") >= 1
