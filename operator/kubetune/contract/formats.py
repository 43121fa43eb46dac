"""The table of data formats: the columns that identify each, most specific first.

TRL's formats (conversational or standard) are what the trainers read; the others are common
inputs the runtime converts (a ReaL-style prompt/answer file, APPS- and HumanEval-style code
datasets).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DataFormat:
    name: str
    columns: frozenset[str]
    description: str


FORMATS: tuple[DataFormat, ...] = (
    DataFormat("preference", frozenset({"prompt", "chosen", "rejected"}), "TRL preference pairs"),
    DataFormat("unpaired_preference", frozenset({"prompt", "completion", "label"}),
               "TRL unpaired preference (a completion and a boolean label)"),
    DataFormat("humaneval", frozenset({"prompt", "canonical_solution", "test", "entry_point"}),
               "HumanEval-style code problems"),
    DataFormat("apps", frozenset({"question", "solutions", "input_output"}), "APPS-style code problems"),
    DataFormat("messages", frozenset({"messages"}), "TRL conversational rows"),
    DataFormat("prompt_completion", frozenset({"prompt", "completion"}), "TRL prompt-completion rows"),
    DataFormat("prompt_answer", frozenset({"prompt", "answer"}), "a question and its reference answer"),
    DataFormat("text", frozenset({"text"}), "TRL language-modelling text"),
    DataFormat("prompt_only", frozenset({"prompt"}), "TRL prompt-only rows"),
)
FORMAT_NAMES: tuple[str, ...] = tuple(f.name for f in FORMATS)
COLUMNS_OF: dict[str, frozenset[str]] = {f.name: f.columns for f in FORMATS}


def detect_format(columns: set[str]) -> str | None:
    """The most specific format whose columns are all there."""
    return next((f.name for f in FORMATS if f.columns <= columns), None)
