"""Pieces of the trainer entrypoint: formats, conversions, checkpoints, rewards, machine settings."""

import json
import os

import datasets
import pytest

from kubetune.contract.config import DatasetConfig, PeftConfig
from kubetune.contract.formats import detect_format
from kubetune.contract.methods import METHODS
from kubetune.contract.output import CompletionRecord, is_complete, newest_complete_checkpoint
from kubetune.contract.sources import Location
from trainer_entrypoint.builtin import BUILD_VERSION
from trainer_entrypoint.data import load_for_method, prepare
from trainer_entrypoint.errors import PermanentError
from trainer_entrypoint.train.checkpoints import discard_incomplete
from trainer_entrypoint.train.rewards import answer_match, reward_function
from trainer_entrypoint.train.trainer import peft_config


@pytest.mark.parametrize(
    "columns,expected",
    [
        ({"messages"}, "messages"),
        ({"prompt", "completion"}, "prompt_completion"),
        ({"text"}, "text"),
        ({"prompt", "chosen", "rejected"}, "preference"),
        ({"prompt", "completion", "label"}, "unpaired_preference"),
        ({"prompt"}, "prompt_only"),
        ({"prompt", "answer"}, "prompt_answer"),
        ({"question", "solutions", "input_output", "difficulty"}, "apps"),
        ({"task_id", "prompt", "canonical_solution", "test", "entry_point"}, "humaneval"),
        ({"foo"}, None),
    ],
)
def test_formats_are_recognised_by_their_columns(columns, expected):
    assert detect_format(columns) == expected


def test_prompt_answer_jsonl_becomes_conversational_sft_and_grpo_data():
    rows = datasets.Dataset.from_list([{"prompt": "2+2?", "answer": "4"}])
    sft = prepare(rows, "sft", "auto", "x.jsonl")
    assert sft[0] == {"prompt": [{"role": "user", "content": "2+2?"}],
                      "completion": [{"role": "assistant", "content": "4"}]}
    grpo = prepare(rows, "grpo", "auto", "x.jsonl")
    assert grpo[0]["prompt"] == [{"role": "user", "content": "2+2?"}] and grpo[0]["answer"] == "4"


def test_apps_rows_convert_to_prompt_completion_with_the_first_solution():
    rows = datasets.Dataset.from_list([{"question": "Read n, print n*2.", "solutions": json.dumps(["print(int(input())*2)"]),
                                        "input_output": json.dumps({"inputs": ["2\n"], "outputs": ["4\n"]}),
                                        "difficulty": "introductory"}])
    sft = prepare(rows, "sft", "auto", "apps.jsonl")
    assert sft[0]["completion"] == [{"role": "assistant", "content": "print(int(input())*2)"}]
    grpo = prepare(rows, "grpo", "auto", "apps.jsonl")
    assert json.loads(grpo[0]["input_output"])["outputs"] == ["4\n"]


def test_preference_pairs_are_unpaired_for_kto():
    rows = datasets.Dataset.from_list([{"prompt": "p", "chosen": "good", "rejected": "bad"}])
    kto = prepare(rows, "kto", "auto", "pairs.jsonl")
    assert sorted((row["completion"], row["label"]) for row in kto) == [("bad", False), ("good", True)]


def test_wrong_columns_name_the_missing_columns_and_the_file():
    rows = datasets.Dataset.from_list([{"question": "q", "reply": "r"}])
    with pytest.raises(PermanentError) as error:
        prepare(rows, "dpo", "auto", "/data/train.jsonl")
    message = str(error.value)
    assert "/data/train.jsonl" in message and "chosen" in message and "found question, reply" in message


def test_declared_format_must_have_its_columns():
    rows = datasets.Dataset.from_list([{"text": "t"}])
    with pytest.raises(PermanentError, match="format messages needs column\\(s\\) messages"):
        prepare(rows, "sft", "messages", "d.jsonl")


def test_local_folder_splits_and_missing_split(tmp_path):
    (tmp_path / "train.jsonl").write_text(json.dumps({"text": "hello"}) + "\n")
    spec = DatasetConfig(location=Location(kind="path", ref=str(tmp_path)), source=str(tmp_path))
    assert load_for_method(spec, "sft", "train")[0]["text"] == "hello"
    with pytest.raises(PermanentError, match="no data files for split 'test'"):
        load_for_method(spec, "sft", "test")


def test_builtin_data_exists_for_every_method(builtin_tiny):
    spec = DatasetConfig(location=Location(kind="builtin", ref="tiny"), source="builtin://tiny")
    for method in METHODS:
        assert len(load_for_method(spec, method, "train")) == 256
        assert len(load_for_method(spec, method, "test")) == 32


def make_checkpoint(folder, step, state_step=None):
    path = folder / f"checkpoint-{step}"
    path.mkdir(parents=True)
    if state_step is not None:
        (path / "trainer_state.json").write_text(json.dumps({"global_step": state_step}))
    return path


def test_newest_complete_checkpoint_skips_interrupted_saves(tmp_path):
    make_checkpoint(tmp_path, 10, 10)
    make_checkpoint(tmp_path, 20, 20)
    make_checkpoint(tmp_path, 30)  # killed before trainer_state.json was written
    make_checkpoint(tmp_path, 40, 30)  # a state that belongs to another step
    (tmp_path / "checkpoint-50").write_text("not a folder")
    assert newest_complete_checkpoint(tmp_path).name == "checkpoint-20"
    assert not is_complete(tmp_path / "checkpoint-30")
    assert newest_complete_checkpoint(tmp_path / "missing") is None
    assert sorted(p.name for p in discard_incomplete(tmp_path)) == ["checkpoint-30", "checkpoint-40"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-10", "checkpoint-20", "checkpoint-50"]


def test_completion_record_belongs_to_one_job_uid(tmp_path):
    record = tmp_path / "COMPLETED.json"
    assert CompletionRecord.read(record, "a") is None
    CompletionRecord(uid="a", global_step=12, model="/output/model", train_loss=0.5).write(record)
    assert CompletionRecord.read(record, "a").global_step == 12
    assert json.loads(record.read_text())["globalStep"] == 12
    # A new job of the same name (new uid) on the same volume trains again.
    assert CompletionRecord.read(record, "b") is None


def test_answer_match_reward():
    completions = [[{"role": "assistant", "content": "so 2 plus 2 is 4."}], [{"role": "assistant", "content": "5"}]]
    assert answer_match(completions, answer=["2 plus 2 is 4.", "4"]) == [1.0, 0.0]


def test_reward_functions_by_name():
    import trl.rewards

    assert reward_function("think_format_reward") is trl.rewards.think_format_reward
    with pytest.raises(PermanentError, match="unknown reward function 'nope'.*answer_match"):
        reward_function("nope")


def test_lora_targets_all_linear_layers_by_default():
    config = peft_config(PeftConfig(r=8, alpha=16, dropout=0.0), METHODS["sft"])
    assert config.target_modules == "all-linear" and config.task_type == "CAUSAL_LM"
    reward = peft_config(PeftConfig(r=8, alpha=16, dropout=0.0, target_modules=["q_proj"]), METHODS["reward"])
    assert reward.task_type == "SEQ_CLS"


def _build_tiny_as_rank(rank, folder, store):
    import torch.distributed as dist

    os.environ["KUBETUNE_BUILTIN_DIR"] = folder
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    from trainer_entrypoint.builtin import tiny_model_dir

    if rank == 1:  # the rank transformers does not save on
        tiny_model_dir()
    dist.barrier()
    dist.destroy_process_group()


def test_builtin_model_is_whole_when_ranks_build_it_inside_a_process_group(tmp_path):
    """transformers writes weights only on rank 0 once a process group exists; a copy built by
    another rank must still hold the weights and config."""
    import torch.multiprocessing

    folder = tmp_path / "builtin"
    torch.multiprocessing.start_processes(_build_tiny_as_rank, args=(str(folder), str(tmp_path / "store")),
                                          nprocs=2, join=True, start_method="spawn")
    model = folder / f"tiny-v{BUILD_VERSION}" / "model"
    assert (model / "config.json").exists() and (model / "model.safetensors").exists()


def elastic_config(training, global_batch=None):
    from kubetune.contract.config import ElasticConfig, TrainerConfig

    location = Location(kind="builtin", ref="tiny")
    return TrainerConfig(
        api_version="kubetune.io/v1alpha1", job={"name": "demo", "namespace": "ml"}, method="sft",
        model={"source": "builtin://tiny", "location": location},
        dataset={"source": "builtin://tiny", "location": location}, training=training,
        elastic=ElasticConfig(global_batch_size=global_batch),
        output={"dir": "/o", "checkpoints": "/o/c", "model": "/o/m", "completion_record": "/o/r", "evaluation": "/o/e"})


def saved_checkpoint(folder, step, max_steps, ranks, zero=False):
    """A checkpoint's files as `ranks` processes leave them (DDP: RNG states; ZeRO: optimizer partitions)."""
    checkpoint = folder / f"checkpoint-{step}"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": step, "max_steps": max_steps}))
    names = [f"rng_state_{rank}.pth" for rank in range(ranks)] if ranks > 1 else ["rng_state.pth"]
    if zero:
        (checkpoint / "latest").write_text(f"global_step{step}")
        names += [f"global_step{step}/bf16_zero_pp_rank_{rank}_mp_rank_00_optim_states.pt" for rank in range(ranks)]
        names.append(f"global_step{step}/mp_rank_00_model_states.pt")
    for name in names:
        (checkpoint / name).parent.mkdir(exist_ok=True)
        (checkpoint / name).write_bytes(b"")
    return checkpoint


def test_a_kept_global_batch_sets_the_accumulation_for_the_world_size():
    from trainer_entrypoint.train.resize import plan_resume

    config = elastic_config({"per_device_train_batch_size": 2}, global_batch=24)
    assert plan_resume(config, None, 4, 8).training == {"gradient_accumulation_steps": 3}
    assert plan_resume(config, None, 1, 8).training == {"gradient_accumulation_steps": 12}
    assert plan_resume(elastic_config({}, global_batch=32), None, 2, 8).training == {"gradient_accumulation_steps": 2}
    with pytest.raises(PermanentError, match="gradient_accumulation_steps: the global batch 24 does not split"):
        plan_resume(config, None, 5, 8)
    assert plan_resume(elastic_config({"per_device_train_batch_size": 2}), None, 3, 8).training == {}


def test_a_checkpoint_of_another_world_size_keeps_its_plan_and_zero_loads_it_as_universal(tmp_path):
    from trainer_entrypoint.train.resize import plan_resume, saved_world_size

    ddp = saved_checkpoint(tmp_path / "ddp", 40, 400, ranks=2)
    zero = saved_checkpoint(tmp_path / "zero", 60, 380, ranks=2, zero=True)
    alone = saved_checkpoint(tmp_path / "one", 80, 400, ranks=1)
    assert (saved_world_size(ddp), saved_world_size(zero), saved_world_size(alone)) == (2, 2, 1)
    assert plan_resume(elastic_config({}), ddp, 2, 8).training == {}  # same size: nothing changes
    resized = plan_resume(elastic_config({"num_train_epochs": 3}), ddp, 1, 8)
    assert resized.training == {"max_steps": 400} and not resized.universal
    deepspeed = tmp_path / "ds.json"
    deepspeed.write_text(json.dumps({"zero_optimization": {"stage": 2}}))
    universal = plan_resume(elastic_config({"deepspeed": str(deepspeed)}), zero, 1, 8)
    assert universal.universal and universal.training["max_steps"] == 380
    assert universal.training["deepspeed"] == {"zero_optimization": {"stage": 2},
                                               "checkpoint": {"load_universal": True}}


def test_the_model_card_is_hugging_face_model_card_yaml_with_training_and_the_evaluation_table(tmp_path):
    from huggingface_hub import ModelCard

    from kubetune.contract.evaluation import Gate, MetricValue, verdict
    from trainer_entrypoint.card import evaluation_section, model_card

    config = elastic_config({"learning_rate": 2e-5, "max_steps": 40, "deepspeed": "/etc/kubetune/ds.json"})
    config = config.model_copy(update={"model": config.model.model_copy(update={"source": "hf://Qwen/Qwen2.5-0.5B"})})
    record = CompletionRecord(uid="u", global_step=40, model="/o/m", train_loss=1.25, tokens=12345, world_size=2)
    metrics = {"pass@1": MetricValue(tuned=0.45, base=0.4, tuned_interval=[0.4, 0.5], base_interval=[0.35, 0.45],
                                     delta_interval=[0.01, 0.09], rows=200)}
    outcome, gates, _ = verdict([Gate(metric="pass@1", min_delta=0.0, confident=True)], metrics)
    path = tmp_path / "README.md"
    path.write_text(model_card(config, record, evaluation_section(metrics, outcome, gates)))
    card = ModelCard.load(path)
    assert card.data.base_model == "Qwen/Qwen2.5-0.5B" and card.data.library_name == "transformers"
    assert {"kubetune", "trl", "sft"} <= set(card.data.tags)
    text = card.text
    assert "- Steps: 40, tokens: 12,345, mean training loss 1.25" in text and "2 processes" in text
    assert '"learning_rate": 2e-05' in text and "deepspeed" not in text.split("```json")[1]
    assert "| pass@1 | 0.45 [0.4, 0.5] | 0.4 [0.35, 0.45] | +0.05 [0.01, 0.09] | 200 |" in text
    assert "Verdict: **Passed**" in text and "pass@1 delta +0.05 [0.01, 0.09] vs minDelta 0 (confident): passed" in text


def test_a_report_of_another_evaluation_spec_moves_aside_before_a_new_evaluation(tmp_path):
    from trainer_entrypoint.evaluate.main import keep_earlier_report

    (tmp_path / "report.json").write_text(json.dumps({"digest": "aaaa1111", "metrics": {}}))
    (tmp_path / "generations.jsonl").write_text("{}\n")
    keep_earlier_report(tmp_path, "aaaa1111")  # the same evaluation again: it stays
    assert (tmp_path / "report.json").exists()
    keep_earlier_report(tmp_path, "bbbb2222")
    assert not (tmp_path / "report.json").exists() and not (tmp_path / "generations.jsonl").exists()
    assert json.loads((tmp_path / "aaaa1111" / "report.json").read_text())["digest"] == "aaaa1111"
    assert (tmp_path / "aaaa1111" / "generations.jsonl").read_text() == "{}\n"
