"""s3:// sources for the model and the dataset, read from a real S3-compatible server on
127.0.0.1 (moto in server mode, tests/s3_server.py) with boto3, as a trainer pod reads them."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kubetune.contract.config import DatasetConfig
from kubetune.contract.initialization import COMPLETE_MARKER, InitializationReport
from kubetune.contract.sources import Location
from s3_server import download_prefix, list_prefix, upload_folder
from trainer_entrypoint.builtin import tiny_dir, tiny_model_dir
from trainer_entrypoint.data import load_for_method
from trainer_entrypoint.errors import PermanentError
from trainer_entrypoint.sources import model_reference

RUN_TIMEOUT = 600
CHAT_ROWS = [
    {"messages": [{"role": "user", "content": f"What is {a} plus {a}?"},
                  {"role": "assistant", "content": f"{a} plus {a} is {2 * a}."}]}
    for a in range(5)
]


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def without_marker(files: dict[str, bytes]) -> dict[str, bytes]:
    return {name: data for name, data in files.items() if name != COMPLETE_MARKER}


def write_jsonl(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


@pytest.fixture
def s3_env(s3_server, monkeypatch, tmp_path):
    """This process reads s3:// from the test server, into a cache of this test's own."""
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    return tmp_path / "hf"


@pytest.fixture(scope="module")
def tiny_in_s3(s3_server):
    """The tiny model folder as s3://models/tiny; a sibling prefix s3://models/tiny-v2 beside it."""
    keys = upload_folder(s3_server.url, tiny_model_dir(), "s3://models/tiny")
    upload_folder(s3_server.url, tiny_dir() / "data" / "text", "s3://models/tiny-v2")
    return keys


def test_the_helpers_round_trip_a_folder_through_the_server(s3_server, tiny_in_s3, tmp_path):
    listed = list_prefix(s3_server.url, "s3://models/tiny/")
    assert sorted(listed) == sorted(tiny_in_s3) and all(key.startswith("tiny/") for key in listed)
    assert listed == {f"tiny/{name}": len(data) for name, data in files_of(tiny_model_dir()).items()}
    download_prefix(s3_server.url, "s3://models/tiny/", tmp_path / "back")
    assert files_of(tmp_path / "back") == files_of(tiny_model_dir())


def test_an_s3_model_is_copied_byte_for_byte_and_loads(s3_env, tiny_in_s3):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    reference = model_reference(Location(kind="s3", ref="models/tiny"), "s3://models/tiny")
    local = Path(reference)
    assert local == s3_env / "s3" / "models" / "tiny"
    # Only this prefix's objects: not those of s3://models/tiny-v2, which shares its first letters.
    assert files_of(local) == files_of(tiny_model_dir())
    model = AutoModelForCausalLM.from_pretrained(reference)
    tokenizer = AutoTokenizer.from_pretrained(reference)
    original = AutoModelForCausalLM.from_pretrained(tiny_model_dir())
    assert model.config.vocab_size == len(tokenizer) == original.config.vocab_size
    weights, expected = model.state_dict(), original.state_dict()
    assert weights.keys() == expected.keys() and all((weights[k] == expected[k]).all() for k in expected)
    assert tokenizer("What is 2 plus 3?")["input_ids"] == AutoTokenizer.from_pretrained(
        tiny_model_dir())("What is 2 plus 3?")["input_ids"]


def test_a_second_read_uses_the_cached_copy_and_a_changed_object_is_copied_again(s3_server, s3_env, tiny_in_s3):
    location = Location(kind="s3", ref="models/tiny")
    local = Path(model_reference(location, "s3://models/tiny"))
    config = local / "config.json"
    config.write_text(config.read_text().replace("{", "{ ", 1))  # one byte more than the object
    stamps = {p: p.stat().st_mtime_ns for p in local.rglob("*") if p.is_file()}
    assert Path(model_reference(location, "s3://models/tiny")) == local
    assert config.read_bytes() == (tiny_model_dir() / "config.json").read_bytes()
    assert {p: p.stat().st_mtime_ns for p in stamps if p != config} == {p: t for p, t in stamps.items() if p != config}


def test_an_s3_dataset_folder_loads_through_the_dataset_loader(s3_server, s3_env, tmp_path):
    folder = tmp_path / "upload"
    write_jsonl(folder / "train.jsonl", CHAT_ROWS)
    write_jsonl(folder / "test.jsonl", CHAT_ROWS[:2])
    upload_folder(s3_server.url, folder, "s3://data/chat")
    spec = DatasetConfig(location=Location(kind="s3", ref="data/chat"), source="s3://data/chat")
    train = load_for_method(spec, "sft", "train")
    assert train.column_names == ["messages"] and [row["messages"] for row in train] == [
        row["messages"] for row in CHAT_ROWS]
    assert len(load_for_method(spec, "sft", "test")) == 2
    # A method that reads another format gets the rows converted (messages -> prompt only).
    assert [row["prompt"] for row in load_for_method(spec, "grpo", "train")] == [
        row["messages"][:1] for row in CHAT_ROWS]


def test_an_s3_source_naming_one_object_loads_that_file(s3_server, s3_env, tmp_path):
    write_jsonl(tmp_path / "one" / "rows.jsonl", CHAT_ROWS[:3])
    upload_folder(s3_server.url, tmp_path / "one", "s3://data/single")
    spec = DatasetConfig(location=Location(kind="s3", ref="data/single/rows.jsonl"),
                         source="s3://data/single/rows.jsonl")
    assert [row["messages"] for row in load_for_method(spec, "sft", "train")] == [
        row["messages"] for row in CHAT_ROWS[:3]]
    assert (s3_env / "s3" / "data" / "single" / "rows.jsonl").is_file()


def test_folder_marker_objects_are_skipped(s3_server, s3_env, tmp_path):
    from s3_server import client

    write_jsonl(tmp_path / "marked" / "train.jsonl", CHAT_ROWS)
    upload_folder(s3_server.url, tmp_path / "marked", "s3://data/marked")
    client(s3_server.url).put_object(Bucket="data", Key="marked/", Body=b"")  # as a console's "Create folder"
    spec = DatasetConfig(location=Location(kind="s3", ref="data/marked"), source="s3://data/marked")
    assert len(load_for_method(spec, "sft", "train")) == len(CHAT_ROWS)


@pytest.mark.parametrize("source", ["s3://models/nothing-here", "s3://models/tin"])
def test_an_empty_prefix_is_a_permanent_error_naming_the_source(s3_env, tiny_in_s3, source):
    location = Location(kind="s3", ref=source.removeprefix("s3://"))
    with pytest.raises(PermanentError, match=f"^{source}: no objects under this prefix"):
        model_reference(location, source)
    spec = DatasetConfig(location=location, source=source)
    with pytest.raises(PermanentError, match=f"^{source}: no objects"):
        load_for_method(spec, "sft", "train")
    assert not (s3_env / "s3" / "models" / "tin").exists()


def test_a_missing_bucket_is_a_permanent_error_naming_the_source(s3_env):
    with pytest.raises(PermanentError, match="^s3://no-such-bucket/model: NoSuchBucket"):
        model_reference(Location(kind="s3", ref="no-such-bucket/model"), "s3://no-such-bucket/model")


def test_kubetune_run_trains_from_an_s3_model_and_dataset(s3_server, tiny_in_s3, tmp_path):
    from test_local_run import write_job

    data = tmp_path / "upload"
    for split in ("train", "test"):
        (data / f"{split}.jsonl").parent.mkdir(parents=True, exist_ok=True)
        (data / f"{split}.jsonl").write_bytes((tiny_dir() / "data" / "messages" / f"{split}.jsonl").read_bytes())
    upload_folder(s3_server.url, data, "s3://data/sft-messages")
    job = write_job(tmp_path, "from-s3", model={"source": "s3://models/tiny"},
                    dataset={"source": "s3://data/sft-messages", "evalSplit": "test"},
                    training={"max_steps": 3, "per_device_train_batch_size": 2, "max_length": 64},
                    resources={"nodes": 1}, evaluation={"enabled": False})
    cache = tmp_path / "hf"
    env = {**os.environ, **s3_server.env, "HF_HOME": str(cache)}
    run_dir, model_cache = tmp_path / "run", tmp_path / "model-cache"
    result = subprocess.run([str(Path(sys.executable).parent / "kubetune"), "run", str(job), "--run-dir",
                             str(run_dir), "--cache-dir", str(model_cache)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=RUN_TIMEOUT)
    logs = "\n".join(p.read_text()[-3000:] for p in sorted((run_dir / "pods").glob("*/log.txt")))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:] + logs
    assert "FineTuneJob Succeeded" in result.stdout
    record = json.loads(next((run_dir / "output").glob("**/COMPLETED.json")).read_text())
    assert record["globalStep"] == 3
    # The initializer fetched both sources once into the cache; the workers read them there.
    manifest = InitializationReport.decode(next(model_cache.glob("jobs/**/sources.json")).read_text())
    entries = {source.source: Path(source.path) for source in manifest.sources}
    assert set(entries) == {"s3://models/tiny", "s3://data/sft-messages"}
    assert all(entry.is_relative_to(model_cache / "entries" / "s3") for entry in entries.values())
    assert without_marker(files_of(entries["s3://models/tiny"])) == files_of(tiny_model_dir())
    assert without_marker(files_of(entries["s3://data/sft-messages"])) == files_of(data)
    assert not (cache / "s3").exists()  # no pod downloaded a source itself
    assert next((run_dir / "output").glob("**/model/config.json")).is_file()
