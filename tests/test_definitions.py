"""Each setting a user writes in the spec and a pod reads in its config is defined once, in the
contract, with its default and description: the spec models derive from those definitions. A
field that is in both but typed apart (a spec's nested model, the config's resolved one) still
has one default."""

import pytest
from pydantic import BaseModel

from kubetune.api import models
from kubetune.contract import config, evaluation, publish
from kubetune.contract.document import Document

# (spec model, the contract's settings it derives from, the config document the pods read).
DERIVED = [
    (models.ModelSpec, config.ModelSettings, config.ModelConfig),
    (models.DatasetSpec, config.DatasetSettings, config.DatasetConfig),
    (models.PeftSpec, config.PeftConfig, config.PeftConfig),
    (models.DistributedSpec, config.DistributedSettings, config.DistributedConfig),
    (models.RewardSpec, config.RewardSettings, config.RewardConfig),
    (models.SamplingSpec, config.SamplingConfig, config.SamplingConfig),
    (models.GateSpec, evaluation.Gate, evaluation.Gate),
    (models.PublishSpec, publish.PublishSettings, publish.PublishTarget),
    (models.EvaluationSpec, config.EvaluationSettings, config.EvaluationConfig),
]
# What only the spec declares: whether and where the evaluation runs and what a regression does
# (the operator's business), and the fields typed apart (DatasetSpec and GateSpec against the
# config's DatasetConfig and Gate).
SPEC_ONLY = {models.EvaluationSpec: {"enabled", "dataset", "gates", "on_regression", "resources"}}


def default_of(field):
    """The default as data: a nested model's default compares by its values, not its class."""
    value = field.default_factory() if field.default_factory is not None else field.default
    return value.model_dump() if isinstance(value, BaseModel) else value


@pytest.mark.parametrize("spec,settings,document", DERIVED, ids=[spec.__name__ for spec, _, _ in DERIVED])
def test_the_spec_takes_its_fields_from_the_contract(spec, settings, document):
    assert issubclass(spec, settings) and issubclass(document, settings)
    assert set(spec.model_fields) - set(settings.model_fields) == SPEC_ONLY.get(spec, set())


@pytest.mark.parametrize("spec,settings,document", DERIVED, ids=[spec.__name__ for spec, _, _ in DERIVED])
def test_a_field_the_spec_and_the_config_share_has_one_default(spec, settings, document):
    shared = set(spec.model_fields) & set(document.model_fields)
    assert shared
    differing = {name: (default_of(spec.model_fields[name]), default_of(document.model_fields[name]))
                 for name in shared if default_of(spec.model_fields[name]) != default_of(document.model_fields[name])}
    assert differing == {}


def test_auto_is_the_strategy_of_a_config_that_names_none():
    assert config.DistributedConfig().strategy == models.DistributedSpec().strategy == "auto"


def test_a_spec_becomes_its_config_by_its_shared_fields():
    spec = models.PublishSpec(target="s3://bucket/models", when="always", private=False)
    target = publish.PublishTarget.of(spec, path="/publish/x")
    assert target.wire() == {"target": "s3://bucket/models", "when": "always", "private": False,
                             "path": "/publish/x"}
    with pytest.raises(ValueError, match="location"):
        config.DatasetConfig.of(models.DatasetSpec(source="hf://org/data"))
    assert issubclass(config.DatasetConfig, Document)


def test_a_gate_reads_its_bound_by_its_wire_name():
    assert models.GateSpec(metric="loss", max_delta=0.0).bound == ("maxDelta", 0.0)
    assert evaluation.Gate(metric="pass@1", min=0.5).bound == ("min", 0.5)
