"""The initializer: a job's hf:// and s3:// sources fetched once into the cache with the real
huggingface_hub client (against tests/hub_endpoint.py, which serves local folders as Hub
repositories and injects faults) and boto3 (against the moto server), then read offline by the
job's pods from there. Most runs are in-process (`main`), with the Hub client put online and the
retry waits shortened; the runs that check exit codes and two initializers at once are processes
of their own, as the initializer Job runs them."""

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from hub_endpoint import HubEndpoint
from kubetune import contract
from kubetune.contract.config import TrainerConfig
from kubetune.contract.failure import FailureReport
from kubetune.contract.initialization import COMPLETE_MARKER, FetchedSource, InitializationReport
from kubetune.contract.sources import Location, split_source
from s3_server import upload_folder
from test_s3 import CHAT_ROWS, files_of, write_jsonl
from trainer_entrypoint.builtin import tiny_dir, tiny_model_dir
from trainer_entrypoint.initialize import retry
from trainer_entrypoint.initialize.cache import entry_folder, safe_segment
from trainer_entrypoint.initialize.main import main, termination_text

TOKEN = "hf_the_right_one"
CHUNK = 10 * 1024 * 1024  # huggingface_hub writes a download in pieces of this size


def location_of(source: str) -> Location:
    kind, ref = split_source(source)
    return Location(kind=kind, ref=ref)


def job_config(tmp_path: Path, name="demo", model="hf://org/tiny", dataset="hf://org/chat", **more) -> TrainerConfig:
    """A job whose cache is tmp_path/cache (shared by the jobs of a test) with its own manifest."""
    cache = tmp_path / "cache"
    return TrainerConfig(
        api_version="kubetune.io/v1alpha1", job={"name": name, "namespace": "ml"}, method="sft",
        model={"source": model, "location": location_of(model), **more.pop("model_settings", {})},
        dataset={"source": dataset, "location": location_of(dataset), "eval_split": "test"}, training={},
        cache={"root": str(cache), "manifest": str(cache / "jobs" / "ml" / name / "sources.json")},
        output={"dir": "/o", "checkpoints": "/o/c", "model": "/o/m", "completion_record": "/o/r", "evaluation": "/o/e"},
        **more)


@pytest.fixture(scope="module")
def repos(tmp_path_factory):
    """Folders to serve: the tiny model, and a chat dataset as the Hub keeps one (parquet under data/)."""
    import pyarrow.json
    import pyarrow.parquet

    root = tmp_path_factory.mktemp("repos")
    model = root / "tiny"
    shutil.copytree(tiny_model_dir(), model)
    chat = root / "chat"
    (chat / "data").mkdir(parents=True)
    for split in ("train", "test"):
        table = pyarrow.json.read_json(tiny_dir() / "data" / "messages" / f"{split}.jsonl")
        pyarrow.parquet.write_table(table, chat / "data" / f"{split}-00000-of-00001.parquet")
    (chat / "README.md").write_text("---\nlicense: mit\n---\n# chat\n")
    return {"model": model, "chat": chat}


@pytest.fixture
def hub(repos):
    endpoint = HubEndpoint()
    endpoint.add_repo("org/tiny", repos["model"])
    endpoint.add_repo("org/chat", repos["chat"], repo_type="dataset")
    yield endpoint
    endpoint.stop()


@pytest.fixture
def online(hub, monkeypatch, tmp_path):
    """This process reaches the test Hub (the test run is offline) and waits briefly between retries;
    the HF_HUB_OFFLINE a pod's load_config sets is undone afterwards."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", os.environ.get("HF_HUB_OFFLINE", "0"))
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv(contract.ENV_METRICS_PORT, "0")
    monkeypatch.setenv(contract.ENV_TERMINATION_LOG, str(tmp_path / "termination-log"))
    monkeypatch.setattr(retry, "FIRST_WAIT_SECONDS", 0.05)
    return hub


def initialize(config: TrainerConfig, tmp_path: Path):
    """Run the initializer in this process: (exit code, termination message)."""
    path = tmp_path / f"{config.job.name}.json"
    path.write_text(config.encode())
    code = main(path)
    return code, (tmp_path / "termination-log").read_text()


def start(config: TrainerConfig, tmp_path: Path, hub: HubEndpoint, **env) -> subprocess.Popen:
    """`python -m trainer_entrypoint initialize` as the initializer Job runs it."""
    path = tmp_path / f"{config.job.name}.json"
    path.write_text(config.encode())
    environment = {**os.environ, "HF_ENDPOINT": hub.url, contract.ENV_CONFIG: str(path),
                   contract.ENV_TERMINATION_LOG: str(tmp_path / f"{config.job.name}.termination-log"),
                   contract.ENV_METRICS_PORT: "0", **env}
    environment.pop("HF_HUB_OFFLINE", None)
    if "HF_TOKEN" not in env:
        environment.pop("HF_TOKEN", None)
    return subprocess.Popen([sys.executable, "-m", "trainer_entrypoint", "initialize"], env=environment,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(process: subprocess.Popen, config: TrainerConfig, tmp_path: Path):
    """(exit code, output, termination message) of a started initializer."""
    output, _ = process.communicate(timeout=90)
    return process.returncode, output, (tmp_path / f"{config.job.name}.termination-log").read_text()


def by_source(report: InitializationReport) -> dict[str, FetchedSource]:
    return {s.source: s for s in report.sources}


def test_a_model_and_a_dataset_are_fetched_once_then_read_offline_from_their_entries(online, repos, tmp_path,
                                                                                       capsys):
    from transformers import AutoConfig, AutoTokenizer

    from trainer_entrypoint.config import load_config
    from trainer_entrypoint.data import load_for_method
    from trainer_entrypoint.sources import model_reference

    config = job_config(tmp_path)
    code, message = initialize(config, tmp_path)
    assert code == 0, message
    served = {name: 1 for name in files_of(repos["model"])}
    assert {name: count for (repo, name), count in online.downloads.items() if repo == "org/tiny"} == served
    assert {name for (repo, name), count in online.downloads.items() if repo == "org/chat" and count == 1} == \
        set(files_of(repos["chat"]))
    report = InitializationReport.decode(message)
    assert InitializationReport.decode(Path(config.cache.manifest).read_text()) == report
    model, chat = by_source(report)["hf://org/tiny"], by_source(report)["hf://org/chat"]
    assert model.revision == online.repo("model", "org/tiny").main and model.repo_type == "model"
    assert chat.revision == online.repo("dataset", "org/chat").main and chat.repo_type == "dataset"
    for fetched, folder in ((model, repos["model"]), (chat, repos["chat"])):
        entry = Path(fetched.path)
        assert entry == entry_folder(tmp_path / "cache", "hf", fetched.repo_type, fetched.location.ref,
                                     fetched.revision)
        marker = json.loads((entry / COMPLETE_MARKER).read_text())
        assert marker["revision"] == fetched.revision and marker["files"] == {
            name: len(data) for name, data in files_of(folder).items()}
        assert {k: v for k, v in files_of(entry).items() if k != COMPLETE_MARKER} == files_of(folder)
        assert not fetched.cached and fetched.bytes_done == fetched.bytes_total == fetched.downloaded_bytes > 0
    printed = capsys.readouterr().out
    assert f"kubetune: model hf://org/tiny@{model.revision}: downloaded 386.5 kB in" in printed
    assert f"kubetune: dataset hf://org/chat@{chat.revision}: downloaded" in printed

    (tmp_path / "pod-config.json").write_text(config.encode())
    pod = load_config(tmp_path / "pod-config.json")
    assert pod.model.location == Location(kind="path", ref=model.path) and pod.model.source == "hf://org/tiny"
    assert pod.dataset.location == Location(kind="path", ref=chat.path) and pod.dataset.source == "hf://org/chat"
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    requests = sum(online.requests.values())
    reference = model_reference(pod.model.location, pod.model.source)
    assert AutoConfig.from_pretrained(reference).vocab_size == len(AutoTokenizer.from_pretrained(reference))
    train = load_for_method(pod.dataset, "sft", "train")
    test = load_for_method(pod.dataset, "sft", "test")
    assert len(train) == len(files_of(tiny_dir() / "data" / "messages")["train.jsonl"].splitlines())
    assert len(test) > 0 and "messages" in train.column_names
    assert sum(online.requests.values()) == requests  # the pod asked the Hub nothing


def test_another_job_with_the_same_sources_downloads_nothing(online, tmp_path, capsys):
    assert initialize(job_config(tmp_path, "first"), tmp_path)[0] == 0
    downloads = dict(online.downloads)
    code, message = initialize(job_config(tmp_path, "second"), tmp_path)
    assert code == 0 and dict(online.downloads) == downloads
    report = InitializationReport.decode(message)
    assert all(s.cached and s.downloaded_bytes == 0 and s.bytes_done == s.bytes_total > 0 for s in report.sources)
    revision = online.repo("model", "org/tiny").main
    assert f"kubetune: model hf://org/tiny@{revision}: cached" in capsys.readouterr().out
    first = InitializationReport.decode((tmp_path / "cache/jobs/ml/first/sources.json").read_text())
    assert [s.path for s in first.sources] == [s.path for s in report.sources]


def test_a_new_commit_is_a_new_entry_and_a_revision_is_read_as_asked(online, repos, tmp_path):
    old = online.repo("model", "org/tiny").main
    changed = tmp_path / "changed"
    shutil.copytree(repos["model"], changed)
    (changed / "generation_config.json").write_text('{"max_new_tokens": 7}')
    new = online.add_repo("org/tiny", changed)
    newest = by_source(InitializationReport.decode(initialize(job_config(tmp_path, "newest"), tmp_path)[1]))
    pinned = job_config(tmp_path, "pinned", model_settings={"revision": old})
    older = by_source(InitializationReport.decode(initialize(pinned, tmp_path)[1]))
    assert newest["hf://org/tiny"].revision == new and older["hf://org/tiny"].revision == old
    assert Path(newest["hf://org/tiny"].path).name == new and Path(older["hf://org/tiny"].path).name == old
    assert json.loads((Path(newest["hf://org/tiny"].path) / "generation_config.json").read_text()) == \
        {"max_new_tokens": 7}
    assert older["hf://org/chat"].cached  # the dataset did not change


@pytest.mark.timeout(120)
def test_two_initializers_at_once_download_each_file_once(hub, repos, tmp_path):
    hub.inject("org/tiny", "model.safetensors", "slow", seconds=4)
    first_config, second_config = job_config(tmp_path, "first"), job_config(tmp_path, "second")
    first = start(first_config, tmp_path, hub)
    deadline = time.monotonic() + 60
    while not hub.content_gets("org/tiny", "model.safetensors") and time.monotonic() < deadline:
        time.sleep(0.05)  # the first one holds the model's entry, downloading its weights
    second = start(second_config, tmp_path, hub)
    (code, output, message), (code2, output2, message2) = (finish(first, first_config, tmp_path),
                                                           finish(second, second_config, tmp_path))
    assert code == code2 == 0, output + output2
    assert set(hub.downloads.values()) == {1}
    assert len(hub.downloads) == len(files_of(repos["model"])) + len(files_of(repos["chat"]))
    assert "another initializer is fetching it; waiting" in output2
    model = by_source(InitializationReport.decode(message2))["hf://org/tiny"]
    assert model.cached and model.path == by_source(InitializationReport.decode(message))["hf://org/tiny"].path
    assert Path(first_config.cache.manifest).exists() and Path(second_config.cache.manifest).exists()


def test_rate_limits_errors_and_corruption_are_survived(online, repos, tmp_path, capsys):
    online.inject("org/tiny", None, "429", retry_after=1)  # the model's first API call
    online.inject("org/tiny", "config.json", "429", retry_after=1)
    online.inject("org/tiny", "tokenizer.json", "500")
    online.inject("org/tiny", "model.safetensors", "corrupt")  # LFS: its sha256 tells
    online.inject("org/chat", "README.md", "corrupt", times=2)  # a small file: its git blob id tells
    code, message = initialize(job_config(tmp_path), tmp_path)
    assert code == 0, message
    report = by_source(InitializationReport.decode(message))
    for fetched, folder in ((report["hf://org/tiny"], repos["model"]), (report["hf://org/chat"], repos["chat"])):
        assert {k: v for k, v in files_of(Path(fetched.path)).items() if k != COMPLETE_MARKER} == files_of(folder)
    # Retry-After is honoured, by this initializer (the API call) and by the client (the file).
    calls = [at for at, method, path, _ in online.log if path == "/api/models/org/tiny"]
    assert len(calls) == 2 and calls[1] - calls[0] >= 1.0
    gets = online.content_gets("org/tiny", "config.json")
    assert [fault for _, _, fault in gets] == ["429", None] and gets[1][0] - gets[0][0] >= 1.0
    assert [fault for _, _, fault in online.content_gets("org/tiny", "tokenizer.json")] == ["500", None]
    assert [fault for _, _, fault in online.content_gets("org/tiny", "model.safetensors")] == ["corrupt", None]
    assert [fault for _, _, fault in online.content_gets("org/chat", "README.md")] == ["corrupt", "corrupt", None]
    model = report["hf://org/tiny"]
    weights = len(files_of(repos["model"])["model.safetensors"])
    assert model.downloaded_bytes == model.bytes_total + weights  # the corrupted copy counts too
    printed = capsys.readouterr().out
    assert "model.safetensors: IntegrityError: model.safetensors: sha256" in printed
    assert "README.md: IntegrityError: README.md: git blob id" in printed


def test_a_connection_cut_mid_file_resumes_where_it_stopped(online, tmp_path):
    big = tmp_path / "big"
    big.mkdir()
    data = os.urandom(2 * CHUNK + 1000)
    (big / "weights.bin").write_bytes(data)
    (big / "config.json").write_text("{}")
    online.add_repo("org/big", big)
    online.inject("org/big", "weights.bin", "cut")
    code, message = initialize(job_config(tmp_path, model="hf://org/big"), tmp_path)
    assert code == 0, message
    fetched = by_source(InitializationReport.decode(message))["hf://org/big"]
    assert (Path(fetched.path) / "weights.bin").read_bytes() == data
    (_, first, cut), (_, resumed, fault) = online.content_gets("org/big", "weights.bin")
    assert cut == "cut" and first is None and resumed == f"bytes={CHUNK}-" and fault is None
    assert online.served[("org/big", "weights.bin")] == len(data) // 2 + len(data) - CHUNK


def test_a_file_that_stays_corrupted_fails_the_attempt_naming_the_source_and_completes_nothing(online, tmp_path):
    from trainer_entrypoint.initialize.fetch import FetchError

    online.inject("org/tiny", "model.safetensors", "corrupt", times=retry.ATTEMPTS)
    with pytest.raises(FetchError, match="^model hf://org/tiny: IntegrityError: model.safetensors: sha256"):
        initialize(job_config(tmp_path), tmp_path)
    failure = FailureReport.read((tmp_path / "termination-log").read_text())
    assert failure.reason != "PermanentError" and "model hf://org/tiny" in failure.message
    revision = online.repo("model", "org/tiny").main
    entry = entry_folder(tmp_path / "cache", "hf", "model", "org/tiny", revision)
    assert not entry.exists()
    # What was whole stays for the Job's next attempt, which downloads only the rest.
    partial = entry.parent / f".{entry.name}.partial"
    assert (partial / "config.json").exists() and not (partial / "model.safetensors").exists()
    before = dict(online.downloads)
    assert initialize(job_config(tmp_path), tmp_path)[0] == 0
    assert {name for (repo, name), count in online.downloads.items()
            if repo == "org/tiny" and count > before.get((repo, name), 0)} == {"model.safetensors"}
    assert (entry / COMPLETE_MARKER).exists() and not partial.exists()


@pytest.mark.timeout(60)
def test_a_missing_repository_fails_at_once_with_exit_code_3_naming_the_source(hub, tmp_path):
    config = job_config(tmp_path, model="hf://org/nothing-here")
    code, output, message = finish(start(config, tmp_path, hub), config, tmp_path)
    assert code == contract.EXIT_PERMANENT, output
    failure = FailureReport.read(message)
    assert failure.reason == "PermanentError"
    assert failure.message.startswith("hf://org/nothing-here: model repository org/nothing-here not found")
    assert hub.requests[("GET", "/api/models/org/nothing-here")] == 1  # one attempt
    assert not Path(config.cache.manifest).exists()


@pytest.mark.parametrize("gated, token, expected", [
    (False, None, "model repository org/private not found, or private and the token is missing (HF_TOKEN, from "
                  "spec.credentials.hfToken, is not set)"),
    (False, "hf_wrong", "model repository org/private: the token (HF_TOKEN, from spec.credentials.hfToken) was "
                        "refused (401)"),
    (True, None, "gated model repository org/private: the token is missing (HF_TOKEN, from "
                 "spec.credentials.hfToken, is not set)"),
    (True, "hf_wrong", "gated model repository org/private: the token (HF_TOKEN, from spec.credentials.hfToken) was "
                       "refused; request access for its account"),
    (False, TOKEN, None),
])
def test_a_private_or_gated_repository_needs_the_token(online, repos, tmp_path, monkeypatch, gated, token, expected):
    online.add_repo("org/private", repos["model"], token=TOKEN, gated=gated)
    if token:
        monkeypatch.setenv("HF_TOKEN", token)
    code, message = initialize(job_config(tmp_path, model="hf://org/private"), tmp_path)
    if expected is None:
        assert code == 0 and by_source(InitializationReport.decode(message))["hf://org/private"].path
        return
    assert code == contract.EXIT_PERMANENT
    assert FailureReport.read(message).message.startswith(f"hf://org/private: {expected}"), message


def test_a_missing_revision_is_permanent(online, tmp_path):
    code, message = initialize(job_config(tmp_path, model_settings={"revision": "v9"}), tmp_path)
    assert code == contract.EXIT_PERMANENT
    assert FailureReport.read(message).message == \
        "hf://org/tiny: revision 'v9' not found in model repository org/tiny"


def test_progress_is_served_while_it_downloads(online, tmp_path, monkeypatch):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv(contract.ENV_METRICS_PORT, str(port))
    online.inject("org/tiny", "model.safetensors", "slow", seconds=3)
    config = job_config(tmp_path)
    run = threading.Thread(target=initialize, args=(config, tmp_path))
    run.start()
    seen = []
    while run.is_alive():
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/progress", timeout=2) as answer:
                seen.append(by_source(InitializationReport.decode(answer.read()))["hf://org/tiny"])
        except OSError:
            pass
        time.sleep(0.1)
    run.join()
    downloading = [s for s in seen if s.bytes_total and not s.path]
    assert downloading and all(0 <= s.bytes_done <= s.bytes_total for s in downloading)
    assert downloading[0].revision == online.repo("model", "org/tiny").main


def test_a_crashed_initializers_leftovers_are_resumed_file_by_file(online, repos, tmp_path):
    revision = online.repo("model", "org/tiny").main
    entry = entry_folder(tmp_path / "cache", "hf", "model", "org/tiny", revision)
    entry.mkdir(parents=True)  # renamed into place, but its initializer died before the marker
    shutil.copy(repos["model"] / "config.json", entry / "config.json")
    (entry / "model.safetensors").write_bytes(b"half of it")
    assert initialize(job_config(tmp_path), tmp_path)[0] == 0
    assert online.downloads[("org/tiny", "config.json")] == 0
    assert online.downloads[("org/tiny", "model.safetensors")] == 1
    assert {k: v for k, v in files_of(entry).items() if k != COMPLETE_MARKER} == files_of(repos["model"])


def test_s3_sources_are_fetched_into_entries_checked_and_cached(online, s3_server, monkeypatch, tmp_path):
    from trainer_entrypoint.config import load_config
    from trainer_entrypoint.data import load_for_method

    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    chat = tmp_path / "chat"
    write_jsonl(chat / "train.jsonl", CHAT_ROWS)
    write_jsonl(chat / "test.jsonl", CHAT_ROWS[:2])
    upload_folder(s3_server.url, tiny_model_dir(), "s3://init-models/tiny")
    upload_folder(s3_server.url, chat, "s3://init-data/chat")
    config = job_config(tmp_path, model="s3://init-models/tiny", dataset="s3://init-data/chat",
                        evaluation={"dataset": {"source": "s3://init-data/chat/test.jsonl",
                                                "location": location_of("s3://init-data/chat/test.jsonl")}})
    code, message = initialize(config, tmp_path)
    assert code == 0, message
    report = by_source(InitializationReport.decode(message))
    model, data, single = report["s3://init-models/tiny"], report["s3://init-data/chat"], \
        report["s3://init-data/chat/test.jsonl"]
    assert {k: v for k, v in files_of(Path(model.path)).items() if k != COMPLETE_MARKER} == \
        files_of(tiny_model_dir())
    assert Path(single.path).name == "test.jsonl"
    assert Path(single.path).read_bytes() == (chat / "test.jsonl").read_bytes()
    assert model.repo_type is None and len(model.revision) == 40 and not model.cached

    (tmp_path / "pod.json").write_text(config.encode())
    pod = load_config(tmp_path / "pod.json")
    assert pod.model.location.kind == pod.dataset.location.kind == pod.evaluation.dataset.location.kind == "path"
    assert len(load_for_method(pod.dataset, "sft", "train")) == len(CHAT_ROWS)
    assert len(load_for_method(pod.evaluation.dataset, "sft", "test")) == 2

    again = by_source(InitializationReport.decode(initialize(job_config(
        tmp_path, "again", model="s3://init-models/tiny", dataset="s3://init-data/chat"), tmp_path)[1]))
    assert again["s3://init-models/tiny"].cached and again["s3://init-models/tiny"].path == model.path
    write_jsonl(chat / "train.jsonl", CHAT_ROWS[:3])  # a changed object is a new revision
    upload_folder(s3_server.url, chat, "s3://init-data/chat")
    changed = by_source(InitializationReport.decode(initialize(job_config(
        tmp_path, "changed", model="s3://init-models/tiny", dataset="s3://init-data/chat"), tmp_path)[1]))
    assert changed["s3://init-data/chat"].revision != data.revision and not changed["s3://init-data/chat"].cached


def test_a_missing_bucket_is_permanent(online, s3_server, monkeypatch, tmp_path):
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    code, message = initialize(job_config(tmp_path, model="s3://no-such-init-bucket/tiny"), tmp_path)
    assert code == contract.EXIT_PERMANENT
    assert FailureReport.read(message).message.startswith("s3://no-such-init-bucket/tiny: NoSuchBucket")


def test_pods_read_sources_directly_when_there_is_no_manifest(tmp_path, capsys):
    from trainer_entrypoint.config import load_config

    config = job_config(tmp_path)
    (tmp_path / "pod.json").write_text(config.encode())
    pod = load_config(tmp_path / "pod.json")
    assert pod.model.location == Location(kind="hf", ref="org/tiny")
    assert "no initializer manifest" in capsys.readouterr().out


def test_a_source_named_twice_is_fetched_once_and_a_model_and_dataset_of_one_name_are_two():
    from trainer_entrypoint.initialize.plan import wanted

    config = job_config(Path("/c"), model="hf://org/same", dataset="hf://org/same",
                        rewards=[{"model": "hf://org/same", "location": location_of("hf://org/same")},
                                 {"model": "hf://org/same", "location": location_of("hf://org/same")}],
                        evaluation={"dataset": {"source": "hf://org/same", "location": location_of("hf://org/same")}})
    assert [(slot.role, slot.repo_type) for slot in wanted(config)] == [("model", "model"), ("dataset", "dataset")]
    pinned = config.model_copy(update={"model": config.model.model_copy(update={"revision": "v1"})})
    assert [(slot.role, slot.revision) for slot in wanted(pinned)] == [
        ("model", "v1"), ("dataset", None), ("reward model", None)]


def test_entry_paths_stay_inside_the_cache():
    assert safe_segment("Qwen2.5-0.5B") == "Qwen2.5-0.5B"
    for hostile in ("..", ".", ".hidden", "a b", "x" * 200, "ünï"):
        safe = safe_segment(hostile)
        assert safe[0].isalnum() and "/" not in safe and len(safe) <= 80 and safe != hostile
    assert safe_segment("a b") != safe_segment("a_b")
    folder = entry_folder(Path("/c"), "s3", None, "bucket/../../etc//x", "f" * 40)
    assert folder.resolve().is_relative_to("/c/entries/s3/bucket")


def test_the_termination_message_keeps_names_revisions_and_paths_within_the_limit():
    sources = [FetchedSource(source=f"hf://org/model-{i}", location=location_of(f"hf://org/model-{i}"),
                             repo_type="model", revision="a" * 40, path="/model-cache/entries/hf/model/org/" + "p" * 40,
                             bytes_done=10 ** 9, bytes_total=10 ** 9, downloaded_bytes=10 ** 9) for i in range(14)]
    report = InitializationReport(sources=sources, seconds=12.5)
    text = termination_text(report)
    assert len(text.encode()) <= contract.TERMINATION_MESSAGE_LIMIT < len(report.encode())
    brief = InitializationReport.decode(text)
    assert [(s.source, s.revision, s.path) for s in brief.sources] == [(s.source, s.revision, s.path) for s in sources]
    assert termination_text(InitializationReport(sources=sources[:2])) == InitializationReport(
        sources=sources[:2]).encode()


def test_a_dataset_repository_whose_card_names_its_configs_is_read_as_the_hub_reads_it(tmp_path):
    from kubetune.contract.config import DatasetConfig
    from trainer_entrypoint.data import load_for_method

    write_jsonl(tmp_path / "conversations" / "part-0.jsonl", CHAT_ROWS)
    (tmp_path / "README.md").write_text("---\nconfigs:\n- config_name: chat\n  data_files:\n  - split: train\n"
                                        "    path: conversations/part-*.jsonl\n---\n# chat\n")
    spec = DatasetConfig(source="hf://org/configs", name="chat", location=Location(kind="path", ref=str(tmp_path)))
    dataset = load_for_method(spec, "sft", "train")
    assert len(dataset) == len(CHAT_ROWS) and "messages" in dataset.column_names
