"""Bad input, fuzzed: generated FineTuneJob documents (the examples with fields deleted, values
swapped for other types, huge, negative or unicode, and keys added) go through validation,
rendering and the lifecycle. Nothing raises; a refusal names its field; what is accepted
renders manifests the Kubernetes schemas accept."""

import copy
from datetime import datetime, timezone

import kubernetes_validate
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import MINIMAL_JOB, example_documents
from kubetune.api.models import FineTuneJobStatus
from kubetune.api.validation import InvalidJob, parse_job
from kubetune.lifecycle import Observed, decide
from kubetune.render import render_job

DOCUMENTS = [document for _, document in example_documents()] + [MINIMAL_JOB]
ODD_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70), st.floats(), st.text(max_size=30),
    st.sampled_from(["2", "yes", "1e400", "\u202egnp.ecaf", "ÿ" * 300, "hf://", "job://", "-1", "", "null"]),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=8), st.integers(), max_size=3),
)


def places(value, path=()):
    """The path of every value inside a document."""
    if isinstance(value, dict):
        for key, child in value.items():
            yield path + (key,)
            yield from places(child, path + (key,))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield path + (index,)
            yield from places(child, path + (index,))


def parent_of(document, path):
    for part in path[:-1]:
        document = document[part]
    return document


@st.composite
def mutated_documents(draw):
    document = copy.deepcopy(draw(st.sampled_from(DOCUMENTS)))
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(list(places(document))))
        parent, key = parent_of(document, path), path[-1]
        change = draw(st.sampled_from(["delete", "replace", "add"]))
        if change == "delete":
            del parent[key]
        elif change == "replace" or not isinstance(parent[key], dict):
            parent[key] = draw(ODD_VALUES)
        else:
            parent[key][draw(st.text(min_size=1, max_size=12))] = draw(ODD_VALUES)
    return document


@settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(mutated_documents())
def test_fuzzed_documents_are_refused_by_field_or_render_valid_manifests(document):
    try:
        job = parse_job(document)
    except InvalidJob as error:
        assert error.problems and all(problem.path for problem in error.problems), error.problems
        return
    for manifest in render_job(job).all_objects():
        kubernetes_validate.validate(manifest, "1.34", strict=True)
    decision = decide(job, [], FineTuneJobStatus(), Observed(now=datetime.now(timezone.utc)))
    assert decision.phase in ("Pending", "Initializing", "Suspended")
