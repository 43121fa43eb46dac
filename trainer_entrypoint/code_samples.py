"""Small code datasets bundled with builtin://tiny: HumanEval-style (function prompt, canonical
solution, unit tests) and APPS-style (question, solutions, stdin/stdout or call cases), with a
difficulty column, so pass@k runs end to end without downloads."""

from __future__ import annotations

import json

HUMANEVAL = [
    {
        "task_id": "tiny/0", "difficulty": "easy", "entry_point": "add",
        "prompt": 'def add(a: int, b: int) -> int:\n    """Return the sum of a and b."""\n',
        "canonical_solution": "    return a + b\n",
        "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n",
    },
    {
        "task_id": "tiny/1", "difficulty": "easy", "entry_point": "is_even",
        "prompt": 'def is_even(n: int) -> bool:\n    """True when n is even."""\n',
        "canonical_solution": "    return n % 2 == 0\n",
        "test": "def check(candidate):\n    assert candidate(4) is True\n    assert candidate(7) is False\n",
    },
    {
        "task_id": "tiny/2", "difficulty": "easy", "entry_point": "maximum",
        "prompt": 'from typing import List\n\n\ndef maximum(values: List[int]) -> int:\n'
                  '    """The largest value of a non-empty list."""\n',
        "canonical_solution": "    best = values[0]\n    for value in values[1:]:\n"
                              "        if value > best:\n            best = value\n    return best\n",
        "test": "def check(candidate):\n    assert candidate([3, 9, 2]) == 9\n    assert candidate([-5]) == -5\n",
    },
    {
        "task_id": "tiny/3", "difficulty": "medium", "entry_point": "reverse_words",
        "prompt": 'def reverse_words(sentence: str) -> str:\n'
                  '    """The words of the sentence in reverse order, separated by single spaces."""\n',
        "canonical_solution": "    return ' '.join(reversed(sentence.split()))\n",
        "test": "def check(candidate):\n    assert candidate('a b  c') == 'c b a'\n    assert candidate('') == ''\n",
    },
    {
        "task_id": "tiny/4", "difficulty": "medium", "entry_point": "fibonacci",
        "prompt": 'def fibonacci(n: int) -> int:\n    """The n-th Fibonacci number, fibonacci(0) == 0."""\n',
        "canonical_solution": "    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n",
        "test": "def check(candidate):\n    assert candidate(0) == 0\n    assert candidate(10) == 55\n"
                "    assert candidate(30) == 832040\n",
    },
    {
        "task_id": "tiny/5", "difficulty": "medium", "entry_point": "count_vowels",
        "prompt": 'def count_vowels(text: str) -> int:\n    """How many of the characters are vowels (aeiou, any case)."""\n',
        "canonical_solution": "    return sum(1 for c in text.lower() if c in 'aeiou')\n",
        "test": "def check(candidate):\n    assert candidate('Hello World') == 3\n    assert candidate('xyz') == 0\n",
    },
]

APPS = [
    {
        "problem_id": 0, "difficulty": "introductory", "starter_code": "",
        "question": "Read two integers a and b on one line and print their sum.",
        "solutions": json.dumps(["a, b = map(int, input().split())\nprint(a + b)\n"]),
        "input_output": json.dumps({"inputs": ["1 2\n", "10 -4\n"], "outputs": ["3\n", "6\n"]}),
    },
    {
        "problem_id": 1, "difficulty": "introductory", "starter_code": "",
        "question": "Read a word and print it reversed.",
        "solutions": json.dumps(["print(input().strip()[::-1])\n"]),
        "input_output": json.dumps({"inputs": ["abc\n", "level\n"], "outputs": ["cba\n", "level\n"]}),
    },
    {
        "problem_id": 2, "difficulty": "interview", "starter_code": "",
        "question": "Read n, then n integers on the next line; print the count of distinct values.",
        "solutions": json.dumps(["input()\nprint(len(set(input().split())))\n"]),
        "input_output": json.dumps({"inputs": ["5\n1 2 2 3 3\n", "1\n7\n"], "outputs": ["3\n", "1\n"]}),
    },
    {
        "problem_id": 3, "difficulty": "interview", "starter_code": "def square(x):\n",
        "question": "Write a function square(x) that returns x squared.",
        "solutions": json.dumps(["def square(x):\n    return x * x\n"]),
        "input_output": json.dumps({"fn_name": "square", "inputs": [[3], [-2]], "outputs": [[9], [4]]}),
    },
]

CODE_DATA = {"humaneval": HUMANEVAL, "apps": APPS}
