"""Load a dataset split, recognise its format, and convert it to what the method's trainer reads.

TRL's formats are recognised by their columns (conversational or standard): messages,
prompt/completion, text, preference (prompt/chosen/rejected), unpaired preference
(prompt/completion/label) and prompt-only. Common other inputs are converted: the
{"prompt", "answer"} JSONL used by ReaL, APPS-style and HumanEval-style code datasets.
A missing column is a permanent error naming the column and where the data came from.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kubetune.contract.config import DatasetConfig
from kubetune.contract.formats import COLUMNS_OF, detect_format
from kubetune.contract.methods import METHODS
from kubetune.contract.sources import PATH

from .errors import PermanentError
from .sources import fetch

DATA_SUFFIXES = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv", ".arrow": "arrow"}


def _as_messages(role: str, value: Any) -> list[dict[str, str]]:
    return value if isinstance(value, list) else [{"role": role, "content": str(value)}]


def _first_solution(solutions: Any) -> str:
    parsed = json.loads(solutions) if isinstance(solutions, str) else solutions
    return parsed[0] if parsed else ""


ROW_CONVERSIONS = {
    # (from format, to format): row -> row
    ("prompt_answer", "prompt_completion"): lambda r: {
        "prompt": _as_messages("user", r["prompt"]), "completion": _as_messages("assistant", r["answer"])},
    ("prompt_answer", "prompt_only"): lambda r: {
        "prompt": _as_messages("user", r["prompt"]), "answer": r["answer"], "solution": r["answer"]},
    ("apps", "prompt_completion"): lambda r: {
        "prompt": _as_messages("user", r["question"]),
        "completion": _as_messages("assistant", _first_solution(r["solutions"]))},
    ("apps", "prompt_only"): lambda r: {
        "prompt": _as_messages("user", r["question"]), "input_output": r["input_output"]},
    ("humaneval", "prompt_completion"): lambda r: {"prompt": r["prompt"], "completion": r["canonical_solution"]},
    ("humaneval", "prompt_only"): lambda r: {"prompt": r["prompt"], "test": r["test"], "entry_point": r["entry_point"]},
    ("prompt_completion", "prompt_only"): lambda r: {"prompt": r["prompt"]},
    ("messages", "prompt_only"): lambda r: {"prompt": r["messages"][:-1] or r["messages"]},
}


def _unpair(dataset):
    from trl.data_utils import unpair_preference_dataset

    return unpair_preference_dataset(dataset)


# (from format, to format): dataset -> dataset, for conversions that change the number of rows.
DATASET_CONVERSIONS = {("preference", "unpaired_preference"): _unpair}


def convert(dataset, fmt: str, target: str):
    """The dataset in the target format, or None when there is no way there."""
    if (fmt, target) in DATASET_CONVERSIONS:
        return DATASET_CONVERSIONS[fmt, target](dataset)
    row = ROW_CONVERSIONS.get((fmt, target))
    return dataset.map(row, remove_columns=dataset.column_names) if row else None


def prepare(dataset, method: str, declared_format: str, where: str):
    """The dataset converted to a format the method accepts, or a PermanentError naming columns."""
    columns = set(dataset.column_names)
    fmt = detect_format(columns) if declared_format == "auto" else declared_format
    if declared_format != "auto":
        missing = COLUMNS_OF[declared_format] - columns
        if missing:
            raise PermanentError(
                f"dataset {where}: format {declared_format} needs column(s) {', '.join(sorted(missing))}; "
                f"found {', '.join(sorted(columns)) or 'none'}"
            )
    accepted = METHODS[method].reads
    if fmt in accepted:
        return dataset
    for target in sorted(accepted):
        converted = convert(dataset, fmt, target)
        if converted is not None:
            return converted
    needed = " or ".join(f"({', '.join(sorted(COLUMNS_OF[f]))})" for f in sorted(accepted))
    missing = sorted(set().union(*(COLUMNS_OF[f] for f in accepted)) - columns)
    raise PermanentError(
        f"dataset {where}: method {method} needs columns {needed}; missing column(s) {', '.join(missing)}; "
        f"found {', '.join(sorted(columns)) or 'none'}"
    )


def data_files(folder: Path, split: str) -> list[Path]:
    """Files of one split in a folder: <split>.jsonl, <split>-00000-of-00001.parquet, data/<split>-*."""
    found = []
    for base in (folder, folder / "data"):
        if base.is_dir():
            found += [p for p in sorted(base.iterdir())
                      if p.suffix in DATA_SUFFIXES and (p.stem == split or p.stem.startswith(f"{split}-"))]
    return found


def load_split(spec: DatasetConfig, split: str, method: str):
    """(dataset, where) for one split; `where` names the file or source in errors."""
    import datasets

    location, source = spec.location, spec.source
    if location.kind == "hf":
        try:
            return datasets.load_dataset(location.ref, spec.name, split=split), f"{source} (split {split})"
        except (FileNotFoundError, ValueError) as error:
            raise PermanentError(f"dataset {source} (split {split}): {error}") from None
    if location.kind == "builtin":
        from .builtin import tiny_data_dir

        path = tiny_data_dir(method, spec.format)
    elif location.kind == PATH:
        path = Path(location.ref)
    else:
        path = fetch(location, source)
    dataset, where = _load_local(path, source, split, spec.name)
    if spec.max_samples:
        dataset = dataset.select(range(min(spec.max_samples, len(dataset))))
    return dataset, where


def _load_local(path: Path, source: str, split: str, name: str | None = None):
    import datasets

    if not path.exists():
        raise PermanentError(f"dataset {source}: {path} does not exist")
    if path.is_file():
        files = [path]
    elif (path / "dataset_dict.json").exists() or (path / "state.json").exists():
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise PermanentError(f"dataset {path}: no split {split!r} (has {', '.join(loaded)})")
            loaded = loaded[split]
        return loaded, str(path)
    elif name or card_declares_configs(path):
        return _load_repository(path, source, split, name)
    else:
        files = data_files(path, split)
        if not files:
            return _load_repository(path, source, split, name, missing=True)
    builder = DATA_SUFFIXES.get(files[0].suffix)
    if builder is None:
        raise PermanentError(f"dataset {files[0]}: unsupported file type (use .jsonl, .json, .parquet or .csv)")
    where = str(files[0]) if len(files) == 1 else f"{path} ({len(files)} files of split {split})"
    try:
        dataset = datasets.load_dataset(builder, data_files=[str(f) for f in files], split="train")
    except Exception as error:  # datasets raises many types for unreadable files
        raise PermanentError(f"dataset {where}: cannot read: {' '.join(str(error).split())[:300]}") from None
    return dataset, where


def card_declares_configs(folder: Path) -> bool:
    """Whether the folder is a dataset repository whose card (README.md) names its configs and
    their files, which then decide the splits, as on the Hub."""
    card = folder / "README.md"
    if not card.is_file():
        return False
    text = card.read_text(errors="replace")
    header = text.split("\n---", 1)[0] if text.startswith("---") else ""
    return any(line.startswith("configs:") for line in header.splitlines())


def _load_repository(path: Path, source: str, split: str, name: str | None, missing: bool = False):
    """A dataset repository's folder (a Hub snapshot in the cache), read by datasets as it reads the
    repository on the Hub: its card's configs, else its file names (train/..., *-train.parquet, ...)."""
    import datasets

    where = f"{source} (split {split}{f', config {name}' if name else ''})"
    try:
        return datasets.load_dataset(str(path), name, split=split), where
    except Exception as error:  # datasets raises many types for a folder it cannot read
        if missing:
            raise PermanentError(f"dataset {path}: no data files for split {split!r} (expected {split}.jsonl, "
                                 f"{split}.parquet, {split}-*.parquet or data/{split}-*)") from None
        raise PermanentError(f"dataset {where}: {' '.join(str(error).split())[:300]}") from None


def load_for_method(spec: DatasetConfig, method: str, split: str):
    dataset, where = load_split(spec, split, method)
    return prepare(dataset, method, spec.format, where)
