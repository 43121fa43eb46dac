"""Write, or check, the images' lock files: every third-party package an image installs, pinned
with its hashes.

Each lock is resolved from the project's own extras in pyproject.toml, held to the versions the
tests run (constraints.txt), so an image installs what CI tested. Resolution is cut off at
RESOLVED_AT, which makes it repeatable: the same inputs give the same lock, and `--check` fails
when a checked-in lock no longer matches its inputs.

    python images/lock.py            # rewrite every lock
    python images/lock.py --check    # exit 1, with a diff, when a lock is stale
"""

from __future__ import annotations

import argparse
import difflib
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Move this date forward (and run this script) to take newer releases into the images.
RESOLVED_AT = "2026-11-24T00:00:00Z"
# The images' interpreter and platform: CPython 3.11 on x86-64 glibc.
PYTHON_VERSION = "3.11"
PLATFORM = "x86_64-manylinux_2_28"


@dataclass(frozen=True)
class Lock:
    path: str
    extras: tuple[str, ...] = ()
    requirement_files: tuple[str, ...] = ()
    constraint_files: tuple[str, ...] = ("constraints.txt",)
    # Only the listed packages: for a lock that goes on top of another one.
    no_deps: bool = False


LOCKS = {
    "operator": Lock("images/locks/operator.lock", extras=("operator",)),
    "trainer": Lock("images/locks/trainer.lock", extras=("trainer", "deepspeed", "s3", "liger")),
    # Built from source in the trainer image with --build-arg FLASH_ATTN=1, over the trainer lock.
    "trainer-flash-attn": Lock(
        "images/locks/trainer-flash-attn.lock",
        requirement_files=("images/locks/trainer-flash-attn.in",),
        constraint_files=("images/locks/trainer.lock",),
        no_deps=True,
    ),
    "evaluator": Lock("images/locks/evaluator.lock", extras=("trainer", "s3", "eval")),
}


def compile_command(lock: Lock, output: Path) -> list[str]:
    inputs = list(lock.requirement_files) or ["pyproject.toml"]
    command = ["uv", "pip", "compile", *inputs, "--output-file", str(output), "--quiet"]
    command += [arg for extra in lock.extras for arg in ("--extra", extra)]
    command += [arg for path in lock.constraint_files for arg in ("--constraint", path)]
    command += ["--no-deps"] if lock.no_deps else []
    return command + [
        "--generate-hashes",
        "--python-version", PYTHON_VERSION,
        "--python-platform", PLATFORM,
        "--exclude-newer", RESOLVED_AT,
        "--custom-compile-command", "python images/lock.py",
        "--no-config",
    ]


def resolve(lock: Lock, output: Path) -> None:
    subprocess.run(compile_command(lock, output), cwd=ROOT, check=True)


def write_all() -> None:
    # In order: the flash-attention lock is held to the trainer lock written before it.
    for lock in LOCKS.values():
        resolve(lock, ROOT / lock.path)


def stale_locks() -> list[str]:
    """A unified diff for each lock that differs from a fresh resolution of its inputs."""
    diffs = []
    with tempfile.TemporaryDirectory() as scratch:
        for name, lock in LOCKS.items():
            fresh = Path(scratch) / f"{name}.lock"
            resolve(lock, fresh)
            old = (ROOT / lock.path).read_text().splitlines(keepends=True)
            new = fresh.read_text().splitlines(keepends=True)
            if old != new:
                diffs.append("".join(difflib.unified_diff(old, new, lock.path, "fresh resolution")))
    return diffs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    if not parser.parse_args().check:
        write_all()
        return 0
    diffs = stale_locks()
    for diff in diffs:
        sys.stdout.write(diff)
    if diffs:
        print("\nlock files are stale: run `python images/lock.py` and commit the result", file=sys.stderr)
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
