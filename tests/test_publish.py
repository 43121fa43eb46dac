"""Publishing the model that passed: the publish step uploads every file of the model folder,
its card included, to a real S3-compatible server and, with the real huggingface_hub client,
to a local endpoint that records the Hub calls, as the verdict allows; and `kubetune run` of a
gated job ends with the verdict in its summary and the model in the bucket. A publish Job run
again (its pod was lost) uploads again and leaves every target as the first run left it."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from s3_server import client, download_prefix, list_prefix
from test_s3 import files_of
from trainer_entrypoint.builtin import tiny_model_dir

RUN_TIMEOUT = 600


def publish_config(tmp_path, targets, verdict=None):
    """A trainer config whose model folder is the tiny model with a card, and an evaluation
    report with `verdict` (None: not evaluated)."""
    from test_trainer_units import elastic_config

    model = tmp_path / "model"
    model.mkdir(parents=True)
    for name, data in files_of(tiny_model_dir()).items():
        (model / name).parent.mkdir(parents=True, exist_ok=True)
        (model / name).write_bytes(data)
    (model / "README.md").write_text("---\nlibrary_name: transformers\n---\n# demo\n")
    evaluation = tmp_path / "evaluation"
    config = elastic_config({})
    if verdict:
        evaluation.mkdir()
        evaluation_report(config, verdict).write(evaluation)
    output = config.output.model_copy(update={"model": str(model), "evaluation": str(evaluation),
                                              "publish": targets})
    return config.model_copy(update={"output": output}), model


def evaluation_report(config, verdict):
    from kubetune.contract.report import EvaluationReport, ReportedDataset, ReportedIntervals, ReportedSampling

    return EvaluationReport(
        digest="d1g35t00", complete=True, job=config.job, engine="vllm", method=config.method,
        dataset=ReportedDataset(source="builtin://tiny", format="prompt_answer", rows=4),
        intervals=ReportedIntervals(resamples=100, level=0.95, seed=0), sampling=ReportedSampling(),
        metrics={}, generations="generations.jsonl", seconds=1.0, verdict=verdict)


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    client(s3_server.url).create_bucket(Bucket="published")


def target(uri, when="gatesPassed"):
    from kubetune.contract.publish import PublishTarget

    return PublishTarget(target=uri, when=when)


def test_every_file_of_the_model_folder_reaches_the_bucket_byte_for_byte(s3_server, s3_env, tmp_path):
    from trainer_entrypoint.publish import publish

    config, model = publish_config(tmp_path, [target("s3://published/runs/demo")], verdict="Passed")
    summary = publish(config)
    (published,) = summary.published
    assert published.url == "s3://published/runs/demo" and published.files == len(files_of(model))
    listed = list_prefix(s3_server.url, "s3://published/runs/demo/")
    assert sorted(listed) == sorted(f"runs/demo/{name}" for name in files_of(model))
    download_prefix(s3_server.url, "s3://published/runs/demo/", tmp_path / "back")
    assert files_of(tmp_path / "back") == files_of(model)
    etag = client(s3_server.url).head_object(Bucket="published", Key="runs/demo/README.md")["ETag"].strip('"')
    assert published.revision == etag


def test_gates_passed_targets_wait_for_a_passing_verdict_and_always_targets_do_not(s3_server, s3_env, tmp_path):
    from trainer_entrypoint.publish import publish

    targets = [target("s3://published/regressed/gated"), target("s3://published/regressed/always", "always")]
    config, _ = publish_config(tmp_path, targets, verdict="Regressed")
    assert [p.target for p in publish(config).published] == ["s3://published/regressed/always"]
    assert not list_prefix(s3_server.url, "s3://published/regressed/gated/")
    unevaluated, _ = publish_config(tmp_path / "none", [target("s3://published/unevaluated")])
    assert [p.target for p in publish(unevaluated).published] == ["s3://published/unevaluated"]


def test_a_failed_upload_names_the_target_in_the_termination_message(s3_env, tmp_path, monkeypatch):
    from kubetune import contract
    from kubetune.contract.failure import FailureReport
    from trainer_entrypoint.publish import main

    config, _ = publish_config(tmp_path, [target("s3://no-such-bucket/demo")], verdict="Passed")
    (tmp_path / "config.json").write_text(config.encode())
    monkeypatch.setenv(contract.ENV_CONFIG, str(tmp_path / "config.json"))
    monkeypatch.setenv(contract.ENV_TERMINATION_LOG, str(tmp_path / "termination-log"))
    assert main() == 1
    report = FailureReport.read((tmp_path / "termination-log").read_text())
    assert report.reason == "PublishFailed" and report.message.startswith("s3://no-such-bucket/demo: ")
    assert "NoSuchBucket" in report.message


def test_kubetune_run_of_a_gated_job_ends_with_the_verdict_and_the_model_in_the_bucket(s3_server, tmp_path):
    from conftest import REPO

    client(s3_server.url).create_bucket(Bucket="models")
    document = yaml.safe_load((REPO / "examples" / "quickstart.yaml").read_text())
    document["spec"]["evaluation"]["gates"] = [{"metric": "loss", "maxDelta": 0.0, "confident": True}]
    document["spec"]["output"] = {"publish": [{"target": "s3://models/quickstart"},
                                              {"target": "pvc://shared-models/quickstart"}]}
    job = tmp_path / "gated.yaml"
    job.write_text(yaml.safe_dump(document))
    run_dir = tmp_path / "run"
    env = {**os.environ, **s3_server.env, "COLUMNS": "250"}  # the summary table unwrapped
    result = subprocess.run([str(Path(sys.executable).parent / "kubetune"), "run", str(job), "--run-dir",
                             str(run_dir)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "verdict" in result.stdout and "Passed: loss delta" in result.stdout, result.stdout[-3000:]
    assert "published" in result.stdout and "s3://models/quickstart" in result.stdout
    model = next((run_dir / "output").glob("**/model/config.json")).parent
    download_prefix(s3_server.url, "s3://models/quickstart/", tmp_path / "back")
    assert files_of(tmp_path / "back") == files_of(model)
    assert "Verdict: **Passed**" in (tmp_path / "back" / "README.md").read_text()
    # The claim of the pvc:// target is a folder of the run here.
    assert files_of(run_dir / "publish" / "shared-models" / "quickstart") == files_of(model)


def run_publish(config, tmp_path, hub):
    """`python -m trainer_entrypoint publish` as the publish pod runs it; its summary."""
    from kubetune import contract
    from kubetune.contract.publish import PublishSummary

    (tmp_path / "config.json").write_text(config.encode())
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_TOKEN": "hf_secret", "HF_HUB_OFFLINE": "0",
           contract.ENV_CONFIG: str(tmp_path / "config.json"),
           contract.ENV_TERMINATION_LOG: str(tmp_path / "termination-log")}
    done = subprocess.run([sys.executable, "-m", "trainer_entrypoint", "publish"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return PublishSummary.read((tmp_path / "termination-log").read_text())


@pytest.fixture
def hub():
    from hub_endpoint import HubEndpoint

    endpoint = HubEndpoint()
    yield endpoint
    endpoint.stop()


def test_hf_publishing_commits_every_file_with_the_real_client_to_a_recording_endpoint(tmp_path, hub):
    config, model = publish_config(tmp_path, [target("hf://my-org/demo")], verdict="Passed")
    (published,) = run_publish(config, tmp_path, hub).published
    assert hub.recorded.created == [{"name": "demo", "organization": "my-org", "visibility": "private",
                                     "type": "model"}]
    assert hub.recorded.tokens == {"Bearer hf_secret"}
    assert hub.recorded.files == files_of(model)  # every file, the card too, byte for byte
    (commit,) = hub.recorded.commits
    assert published.target == "hf://my-org/demo" and published.revision == commit
    assert published.url == f"{hub.url}/my-org/demo/commit/{commit}" and published.files == len(files_of(model))


def test_hf_publishing_again_commits_only_what_changed(tmp_path, hub):
    config, model = publish_config(tmp_path, [target("hf://my-org/demo")], verdict="Passed")
    first = run_publish(config, tmp_path, hub)
    again = run_publish(config, tmp_path, hub)
    assert again == first and len(hub.recorded.commits) == 1  # the same model: nothing to commit
    assert hub.recorded.files == files_of(model)
    (model / "README.md").write_text("---\nlibrary_name: transformers\n---\n# demo, evaluated\n")
    (changed,) = run_publish(config, tmp_path, hub).published
    assert len(hub.recorded.commits) == 2 and changed.revision == hub.recorded.commits[-1] != first.published[0].revision
    assert hub.recorded.files == files_of(model)


def test_s3_and_claim_publishing_again_leave_the_same_files_and_revision(s3_server, s3_env, tmp_path):
    from trainer_entrypoint.publish import publish

    claim = tmp_path / "claim" / "models" / "demo"
    targets = [target("s3://published/again/demo"),
               target("pvc://shared/models/demo").model_copy(update={"path": str(claim)})]
    config, model = publish_config(tmp_path, targets, verdict="Passed")
    first = publish(config)
    listed = sorted(list_prefix(s3_server.url, "s3://published/again/"))
    again = publish(config)
    assert again == first and [p.revision for p in again.published] == [p.revision for p in first.published]
    assert all(p.revision for p in again.published)
    assert sorted(list_prefix(s3_server.url, "s3://published/again/")) == listed
    download_prefix(s3_server.url, "s3://published/again/demo/", tmp_path / "back")
    assert files_of(tmp_path / "back") == files_of(model) == files_of(claim)


def test_a_report_that_cannot_be_read_stops_publishing_rather_than_counting_as_not_evaluated(s3_env, tmp_path):
    from trainer_entrypoint.publish import PublishError, publish

    config, _ = publish_config(tmp_path, [target("s3://published/unreadable")], verdict="Regressed")
    report = tmp_path / "evaluation" / "report.json"
    report.write_text(report.read_text()[:40])
    with pytest.raises(PublishError, match=str(tmp_path / "evaluation")):
        publish(config)
