"""Whether a generated program is correct: HumanEval-style (function + unit tests) and
APPS-style (stdin/stdout cases, or calls of a named function) tasks, run in the sandbox.

A program passes only when it runs to the end and prints a per-run random marker after the
tests: a candidate that exits early (sys.exit, os._exit) or hangs fails.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass
from typing import Any, Optional

from .sandbox import run_program

FENCED = re.compile(r"```(?:python|py|python3)?[ \t]*\n(.*?)```", re.DOTALL)
HEADER = re.compile(r"^(?:import |from \S+ import )")
# Where a completion-style model has finished the function (the Codex/HumanEval convention).
HUMANEVAL_STOPS = ["\nclass ", "\ndef ", "\n#", "\nif __name__", "\nprint("]


@dataclass(frozen=True)
class HumanEvalTask:
    prompt: str
    test: str
    entry_point: str


@dataclass(frozen=True)
class AppsTask:
    inputs: list[Any]
    outputs: list[Any]
    fn_name: Optional[str] = None
    starter_code: str = ""


def fenced_code(text: str) -> Optional[str]:
    blocks = FENCED.findall(text)
    return blocks[-1] if blocks else None


def humaneval_program(task: HumanEvalTask, completion: str) -> str:
    """prompt + completion; a chat-style answer with a whole fenced function replaces the body."""
    block = fenced_code(completion)
    if block and f"def {task.entry_point}" in block:
        imports = "\n".join(line for line in task.prompt.splitlines() if HEADER.match(line))
        body = f"{imports}\n{block}"
    else:
        body = task.prompt + completion
    return f"{body}\n\n{task.test}\n\ncheck({task.entry_point})\n"


def humaneval_passes(task: HumanEvalTask, completion: str, timeout: float) -> bool:
    marker = secrets.token_hex(16)
    outcome = run_program(humaneval_program(task, completion) + f"print({marker!r})\n", timeout=timeout)
    return outcome.returncode == 0 and outcome.stdout.rstrip().endswith(marker)


def apps_task(row: dict[str, Any]) -> AppsTask:
    cases = row["input_output"]
    cases = json.loads(cases) if isinstance(cases, str) and cases.strip() else (cases or {})
    return AppsTask(inputs=list(cases.get("inputs", [])), outputs=list(cases.get("outputs", [])),
                    fn_name=cases.get("fn_name"), starter_code=row.get("starter_code") or "")


def _same_output(actual: str, expected: Any) -> bool:
    expected_text = "\n".join(expected) if isinstance(expected, list) else str(expected)
    return actual.split() == expected_text.split()


def _call_harness(code: str, fn_name: str, marker: str) -> str:
    return (
        f"{code}\n\nimport json as _json, sys as _sys\n"
        f"_args = _json.loads(_sys.stdin.read())\n"
        f"_fn = globals().get({fn_name!r}) or getattr(globals()['Solution'](), {fn_name!r})\n"
        f"_result = _fn(*_args)\n"
        f"print({marker!r} + _json.dumps(_result))\n"
    )


def _call_passes(code: str, task: AppsTask, case_input: Any, expected: Any, timeout: float) -> bool:
    marker = secrets.token_hex(16)
    outcome = run_program(_call_harness(code, task.fn_name or "", marker), json.dumps(case_input), timeout)
    if outcome.returncode != 0 or marker not in outcome.stdout:
        return False
    try:
        result = json.loads(outcome.stdout.rsplit(marker, 1)[1])
    except ValueError:
        return False
    return result == expected or [result] == expected


def apps_passes(task: AppsTask, completion: str, timeout: float) -> bool:
    """Every case passes; stops at the first failure. A task without cases never passes."""
    if not task.inputs:
        return False
    code = fenced_code(completion) or completion
    for case_input, expected in zip(task.inputs, task.outputs):
        if task.fn_name:
            passed = _call_passes(code, task, case_input, expected, timeout)
        else:
            stdin = "\n".join(case_input) if isinstance(case_input, list) else str(case_input)
            outcome = run_program(code, stdin, timeout)
            passed = outcome.returncode == 0 and _same_output(outcome.stdout, expected)
        if not passed:
            return False
    return True
