"""The checked-in TRL key table matches the installed TRL's config classes."""

import dataclasses

import trl

from kubetune.api.batch import TRL_BATCH_DEFAULTS
from kubetune.api.trl_keys import MANAGED_KEYS, generate_table, load_table
from kubetune.contract.methods import METHODS


def test_table_matches_installed_trl():
    assert load_table() == generate_table(), (
        "kubetune/api/trl_keys.json is stale: run `python -m kubetune.api.trl_keys --write`"
    )


def test_table_covers_every_method_with_its_trl_config_class():
    table = load_table()
    assert table["trl_version"] == trl.__version__
    assert set(table["methods"]) == set(METHODS)
    for method, row in METHODS.items():
        fields = table["methods"][method]["fields"]
        assert table["methods"][method]["class"] == row.config_class
        assert {"learning_rate", "per_device_train_batch_size", "num_train_epochs"} <= set(fields)


def test_managed_keys_are_real_trl_keys():
    # A managed key that TRL no longer has would hide a rename.
    every_field = set().union(*(m["fields"] for m in load_table()["methods"].values()))
    assert set(MANAGED_KEYS) <= every_field, set(MANAGED_KEYS) - every_field


def test_the_batch_defaults_the_elastic_batch_split_assumes_are_trls():
    for method in METHODS.values():
        defaults = {f.name: f.default for f in dataclasses.fields(getattr(trl, method.config_class))}
        assert {key: defaults[key] for key in TRL_BATCH_DEFAULTS} == TRL_BATCH_DEFAULTS, method.name


def test_the_defaults_a_plan_assumes_are_trls():
    from kubetune.contract.plan import TRL_PLAN_DEFAULTS

    for method in METHODS.values():
        defaults = {f.name: f.default for f in dataclasses.fields(getattr(trl, method.config_class))}
        assert all(defaults[key] == value for key, value in TRL_PLAN_DEFAULTS.items() if key in defaults), method.name
        assert defaults["gradient_checkpointing"] is True and defaults["per_device_train_batch_size"] == 8
        assert defaults.get("max_length", 1024) == 1024 or method.name in ("grpo", "rloo")


def test_only_numbers_for_fields_that_take_no_string_are_converted():
    from kubetune.api.trl_keys import as_trl_reads

    read = as_trl_reads("sft", {"learning_rate": "2e-5", "max_steps": "10", "run_name": "10", "warmup_ratio": 0.1})
    assert read == {"learning_rate": 2e-5, "max_steps": 10, "run_name": "10", "warmup_ratio": 0.1}
    assert isinstance(read["max_steps"], int) and isinstance(read["run_name"], str)
