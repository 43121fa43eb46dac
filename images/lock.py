"""Write, or check, the images' lock files: every third-party package an image installs, pinned
with its hashes.

Each lock is resolved from the project's own extras in pyproject.toml, held to the versions the
tests run (constraints.txt), so an image installs what CI tested.

A lock changes only when asked. Writing and checking both resolve with the checked-in lock as
uv's preferences, which uv keeps unless told to upgrade: `--check` therefore answers "does the
lock still satisfy its inputs?" and not "is it what the registry would pick today?", so it does
not go stale when new releases are published. A new or changed input (a dependency added to an
extra, a tighter constraint) changes the pins and fails the check. `--upgrade` takes the newest
releases up to RESOLVED_AT (where the index honours the cut-off).

    python images/lock.py              # bring every lock in line with its inputs, keeping pins
    python images/lock.py --upgrade    # re-lock to newer releases: a deliberate step
    python images/lock.py --check      # exit 1, with a diff of the pins, when a lock is stale
"""

from __future__ import annotations

import argparse
import difflib
import re
import shutil
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
    # vLLM in the trainer too: GRPO and RLOO generate with it inside the training processes.
    "trainer": Lock("images/locks/trainer.lock", extras=("trainer", "deepspeed", "s3", "liger", "vllm")),
    # Built from source in the trainer image with --build-arg FLASH_ATTN=1, over the trainer lock.
    "trainer-flash-attn": Lock(
        "images/locks/trainer-flash-attn.lock",
        requirement_files=("images/locks/trainer-flash-attn.in",),
        constraint_files=("images/locks/trainer.lock",),
        no_deps=True,
    ),
    "evaluator": Lock("images/locks/evaluator.lock", extras=("trainer", "s3", "vllm")),
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


def resolve(lock: Lock, output: Path, upgrade: bool = False) -> None:
    """Resolve into `output`; the pins already there are uv's preferences unless upgrading."""
    command = compile_command(lock, output) + (["--upgrade"] if upgrade else [])
    subprocess.run(command, cwd=ROOT, check=True)


def write_all(upgrade: bool) -> None:
    # In order: the flash-attention lock is held to the trainer lock written before it.
    for lock in LOCKS.values():
        resolve(lock, ROOT / lock.path, upgrade)


PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")


def pins(text: str) -> list[str]:
    """The `name==version` lines of a lock; hashes a registry adds to a release do not count."""
    return [f"{m.group(1).lower()}=={m.group(2)}\n" for m in map(PIN.match, text.splitlines()) if m]


def stale_locks() -> list[str]:
    """A diff of the pins for each lock that its inputs, resolved with the lock as preferences,
    would change."""
    diffs = []
    with tempfile.TemporaryDirectory() as scratch:
        for name, lock in LOCKS.items():
            resolved = Path(scratch) / f"{name}.lock"
            shutil.copyfile(ROOT / lock.path, resolved)
            resolve(lock, resolved)
            old, new = pins((ROOT / lock.path).read_text()), pins(resolved.read_text())
            if old != new:
                diffs.append("".join(difflib.unified_diff(old, new, lock.path, "resolved from its inputs")))
    return diffs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    parser.add_argument("--upgrade", action="store_true", help="take newer releases instead of keeping pins")
    args = parser.parse_args()
    if not args.check:
        write_all(args.upgrade)
        return 0
    diffs = stale_locks()
    for diff in diffs:
        sys.stdout.write(diff)
    if diffs:
        print("\nlock files are stale: run `python images/lock.py` and commit the result", file=sys.stderr)
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
