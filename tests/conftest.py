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
    "spec": {"model": {"source": "builtin://tiny"}, "dataset": {"source": "builtin://tiny"}},
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
