import copy
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))

MINIMAL_JOB = {
    "apiVersion": "kubetune.io/v1alpha1",
    "kind": "FineTuneJob",
    "metadata": {"name": "demo", "namespace": "ml"},
    "spec": {"model": {"source": "builtin://tiny"}, "dataset": {"source": "builtin://tiny", "evalSplit": "test"}},
}


def example_documents():
    """(example file, document) for every FineTuneJob in examples/."""
    for path in EXAMPLES:
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                yield path, document


@pytest.fixture
def minimal_job():
    return copy.deepcopy(MINIMAL_JOB)


def with_spec(**spec_fields):
    job = copy.deepcopy(MINIMAL_JOB)
    job["spec"].update(spec_fields)
    return job


@pytest.fixture(scope="session", autouse=True)
def builtin_tiny(tmp_path_factory):
    """builtin://tiny is built once per test session; every process the tests start reuses it."""
    import os

    os.environ["KUBETUNE_BUILTIN_DIR"] = str(tmp_path_factory.mktemp("builtin"))
    # Two CPU cores: one thread per training process, or they fight over the cores.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from trainer_entrypoint.builtin import tiny_dir

    return tiny_dir()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real S3-compatible server (moto, its own process) on 127.0.0.1 for the session: .url, and
    .env, the AWS_* a process needs to reach it (tests set them with monkeypatch.setenv or pass
    them to a subprocess). Buckets outlive a test: each test uses buckets of its own."""
    from s3_server import S3Server

    server = S3Server.start(tmp_path_factory.mktemp("s3-server"))
    yield server
    server.stop()
