"""Tables generated from installed packages and checked in beside this module, so that reading
a spec needs neither package: TRL's config keys (`trl_keys`) and the Kubernetes schemas
(`kube_schemas`). Each module's `--write` regenerates its table; a test fails when one drifts.
"""

from __future__ import annotations

import functools
import json
import sys
from importlib import resources
from pathlib import Path
from typing import Any, Callable


@functools.cache
def load(file_name: str) -> dict[str, Any]:
    return json.loads(resources.files("kubetune.api").joinpath(file_name).read_text())


def main(argv: list[str], file_name: str, generate: Callable[[], dict[str, Any]], sort_keys: bool = False) -> int:
    """Print the freshly generated table, or with --write replace the checked-in one."""
    text = json.dumps(generate(), indent=1, sort_keys=sort_keys) + "\n"
    if argv[1:] != ["--write"]:
        sys.stdout.write(text)
        return 0
    path = Path(str(resources.files("kubetune.api").joinpath(file_name)))
    path.write_text(text)
    print(f"wrote {path}")
    return 0
