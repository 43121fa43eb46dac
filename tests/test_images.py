"""The container images, checked without a Docker engine: each lock file matches its inputs and
installs, by the Dockerfiles' own install script, into a fresh virtual environment that then does
the image's work; the Dockerfiles pass hadolint and keep the pods' security contract."""

import functools
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from dockerfile_parse import DockerfileParser

from conftest import REPO
from kubetune.render.pods import NON_ROOT_UID, RenderSettings
from test_chart import deployment, template

BIN = Path(sys.executable).parent
IMAGES = REPO / "images"
# image: (Dockerfile, build target)
IMAGE_TARGETS = {
    "operator": ("operator.Dockerfile", "operator"),
    "trainer": ("cuda.Dockerfile", "trainer"),
    "evaluator": ("cuda.Dockerfile", "evaluator"),
}
DOCKERFILES = sorted({dockerfile for dockerfile, _ in IMAGE_TARGETS.values()})
INSTALL_TIMEOUT = 900
RUN_TIMEOUT = 900


def run(*command, cwd=REPO, timeout=RUN_TIMEOUT, **env_vars):
    # uv and hadolint are installed beside the test interpreter.
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", **env_vars}
    return subprocess.run([str(c) for c in command], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def parse(dockerfile):
    return DockerfileParser(str(IMAGES / dockerfile))


def stages(dockerfile):
    """{stage name: (the image or stage it starts from, its instructions)}."""
    result, current = {}, None
    for item in parse(dockerfile).structure:
        if item["instruction"] == "FROM":
            words = item["value"].split()
            current = []
            result[words[2] if len(words) == 3 and words[1].upper() == "AS" else words[0]] = (words[0], current)
        elif current is not None:
            current.append(item)
    return result


def stage_chain(dockerfile, stage):
    """A stage and the stages it starts from, base first."""
    by_stage, chain = stages(dockerfile), []
    while stage in by_stage:
        chain.insert(0, stage)
        stage = by_stage[stage][0]
    return chain


def image_instructions(image, kind, built_from=False):
    """The instructions of the image's target stage and the stages under it; with built_from,
    also those of every stage it copies or mounts files from."""
    dockerfile, target = IMAGE_TARGETS[image]
    by_stage, chosen = stages(dockerfile), stage_chain(dockerfile, target)
    if built_from:
        for stage in chosen:  # the list grows as stages it copies from are found
            text = " ".join(i["value"] for i in by_stage[stage][1])
            chosen += [s for s in re.findall(r"from=([\w.-]+)", text) if s in by_stage and s not in chosen]
    return [i["value"] for stage in chosen for i in by_stage[stage][1] if i["instruction"] == kind]


def copies(dockerfile):
    """(sources, destination) of each COPY from the build context, not from another stage."""
    result = []
    for item in parse(dockerfile).structure:
        words = item["value"].split()
        if item["instruction"] == "COPY" and not any(w.startswith("--from") for w in words):
            paths = [w for w in words if not w.startswith("--")]
            result.append((paths[:-1], paths[-1]))
    return result


def project_sources(dockerfile):
    """What the Dockerfile copies to build the project from (into /src/)."""
    return [path for sources, target in copies(dockerfile) if target.startswith("/src") for path in sources]


# --- lock files ------------------------------------------------------------------------


def test_lock_files_match_their_inputs():
    result = run(sys.executable, IMAGES / "lock.py", "--check", timeout=600)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


def test_a_new_input_makes_the_lock_check_fail(tmp_path):
    for path in ["pyproject.toml", "constraints.txt", "images/lock.py", *(
            str(p.relative_to(REPO)) for p in (IMAGES / "locks").iterdir())]:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO / path, tmp_path / path)
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('operator = ["kopf', 'operator = ["six>=1.16", "kopf', 1))
    result = run(sys.executable, tmp_path / "images" / "lock.py", "--check", cwd=tmp_path, timeout=600)
    assert result.returncode == 1
    assert "+six==" in result.stdout and "images/locks/operator.lock" in result.stdout


def lock_pins(path):
    lines = (IMAGES / "locks" / path).read_text().splitlines()
    return dict(line.split(" ")[0].split("==") for line in lines if line[:1].isalpha())


def test_the_flash_attention_lock_agrees_with_the_trainer_lock():
    trainer, flash = lock_pins("trainer.lock"), lock_pins("trainer-flash-attn.lock")
    assert "flash-attn" in flash and "torch" in trainer
    assert all(flash[name] == trainer[name] for name in flash.keys() & trainer.keys())


def test_the_evaluator_lock_is_the_trainer_lock_less_its_training_kernels():
    """Both GPU images run vLLM on the same stack: the trainer for GRPO/RLOO generation, the
    evaluator for evaluation."""
    trainer, evaluator = lock_pins("trainer.lock"), lock_pins("evaluator.lock")
    assert "vllm" in trainer and "deepspeed" not in evaluator
    assert evaluator.keys() <= trainer.keys()
    assert {name: (evaluator[name], trainer[name]) for name in evaluator if evaluator[name] != trainer[name]} == {}


@pytest.fixture(scope="module")
def image_venvs(tmp_path_factory):
    """One virtual environment per image, installed as its Dockerfile installs it."""
    root = tmp_path_factory.mktemp("image-venvs")
    yield {name: install_image(name, root) for name in IMAGE_TARGETS}
    shutil.rmtree(root, ignore_errors=True)


def install_image(name, root):
    venv = root / name
    # The wheels' cache goes with the environments: together they are some 10 GB.
    uv = functools.partial(run, "uv", timeout=INSTALL_TIMEOUT, UV_CACHE_DIR=str(root / "uv-cache"))
    created = uv("venv", "--quiet", "--python", sys.executable, venv)
    assert created.returncode == 0, created.stderr
    installed = run("sh", IMAGES / "install-lock.sh", venv, IMAGES / "locks" / f"{name}.lock",
                    timeout=INSTALL_TIMEOUT, UV_CACHE_DIR=str(root / "uv-cache"))
    assert installed.returncode == 0, f"{name}: {installed.stdout[-3000:]}{installed.stderr[-3000:]}"
    # The project's wheel from exactly the files the Dockerfile copies, so a missing COPY fails here.
    source, wheels = root / f"{name}-src", root / f"{name}-wheels"
    source.mkdir()
    for path in project_sources(IMAGE_TARGETS[name][0]):
        (shutil.copytree if (REPO / path).is_dir() else shutil.copy)(REPO / path, source / Path(path).name)
    built = uv("build", "--quiet", "--wheel", "--out-dir", wheels, source)
    assert built.returncode == 0, built.stderr[-3000:]
    project = uv("pip", "install", "--quiet", "--python", venv / "bin" / "python", "--no-deps",
                 *wheels.glob("kubetune-*.whl"))
    assert project.returncode == 0, project.stderr[-3000:]
    return venv


def test_operator_image_generates_the_checked_in_crd(image_venvs):
    venv = image_venvs["operator"]
    crd = run(venv / "bin" / "kubetune", "crd")
    assert crd.returncode == 0, crd.stderr
    assert crd.stdout == (REPO / "crds" / "kubetune.io_finetunejobs.yaml").read_text()
    handlers = run(venv / "bin" / "python", "-c", "import kopf, kubetune.handlers, prometheus_client")
    assert handlers.returncode == 0, handlers.stderr[-3000:]
    # The operator image carries no training stack.
    torch = run(venv / "bin" / "python", "-c", "import torch")
    assert torch.returncode != 0


def test_trainer_and_evaluator_images_run_the_quickstart(image_venvs, tmp_path):
    """The trainer image's environment trains (and evaluates) the quickstart; the evaluator's
    then evaluates that same output again."""
    run_dir = tmp_path / "run"
    quickstart = REPO / "examples" / "quickstart.yaml"
    trained = run(image_venvs["trainer"] / "bin" / "kubetune", "run", quickstart, "--run-dir", run_dir, cwd=tmp_path)
    assert trained.returncode == 0, trained.stdout[-4000:] + trained.stderr[-2000:]
    report_path = next((run_dir / "output").glob("**/evaluation/report.json"))
    first_report = json.loads(report_path.read_text())
    report_path.unlink()

    again = run(image_venvs["evaluator"] / "bin" / "kubetune", "run", quickstart, "--run-dir", run_dir, cwd=tmp_path)
    assert again.returncode == 0, again.stdout[-4000:] + again.stderr[-2000:]
    second_report = json.loads(report_path.read_text())
    assert second_report["metrics"]["loss"]["tuned"] == pytest.approx(first_report["metrics"]["loss"]["tuned"],
                                                                      rel=1e-3)


@pytest.mark.parametrize("name, code", [
    # GRPO and RLOO generate with vLLM inside the training processes.
    ("trainer", "import torch, trl, peft, deepspeed, liger_kernel, boto3, vllm; from vllm import LLM; "
                "from trl.import_utils import is_vllm_available; assert is_vllm_available(); assert torch.version.cuda"),
    ("evaluator", "import torch, trl, vllm, peft; from vllm import LLM; from vllm.lora.request import LoRARequest; "
                  "import trainer_entrypoint.evaluate.engines; from trl.import_utils import is_vllm_available; "
                  "assert is_vllm_available(); assert torch.version.cuda"),
])
def test_gpu_images_carry_their_cuda_stack(image_venvs, name, code):
    result = run(image_venvs[name] / "bin" / "python", "-W", "always", "-c", code)
    assert result.returncode == 0, result.stderr[-3000:]
    # TRL warns on import of a vLLM outside the range it supports (tests/test_versions.py).
    assert "TRL currently supports vLLM" not in result.stderr, result.stderr[-3000:]


# --- Dockerfiles -----------------------------------------------------------------------


def test_dockerfiles_pass_hadolint():
    result = run("hadolint", "--config", IMAGES / "hadolint.yaml", *(IMAGES / d for d in DOCKERFILES))
    assert result.returncode == 0, result.stdout + result.stderr


def operator_uid():
    pod = deployment(template("helm4", "default"))["spec"]["template"]["spec"]
    return pod["securityContext"]["runAsUser"]


@pytest.mark.parametrize("image", IMAGE_TARGETS)
def test_images_run_as_the_uid_their_pods_run_as(image):
    users = image_instructions(image, "USER")
    expected = operator_uid() if image == "operator" else NON_ROOT_UID
    # Numeric, so the kubelet can verify runAsNonRoot without reading /etc/passwd.
    assert users and users[-1] == f"{expected}:{expected}" and expected != 0


@pytest.mark.parametrize("image", IMAGE_TARGETS)
def test_images_install_their_own_lock_with_hashes(image):
    dockerfile, _ = IMAGE_TARGETS[image]
    copied = [path for sources, _ in copies(dockerfile) for path in sources]
    assert f"images/locks/{image}.lock" in copied
    runs = image_instructions(image, "RUN", built_from=True)
    assert any(f"install-lock /opt/venv /locks/{image}.lock" in r for r in runs)
    script = (IMAGES / "install-lock.sh").read_text()
    assert "--require-hashes" in script and "--no-deps" in script and "uv pip check" in script
    # The project goes in without dependencies: the lock holds all of them.
    assert any("--no-deps /wheels/kubetune-" in r for r in runs)


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_dockerfiles_copy_only_what_exists(dockerfile):
    copied = [path for sources, _ in copies(dockerfile) for path in sources]
    assert copied and not [path for path in copied if not (REPO / path).exists()]


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_base_images_are_pinned_tags(dockerfile):
    for image in set(parse(dockerfile).parent_images) - set(stages(dockerfile)):
        repository, _, tag = image.rpartition(":")
        assert repository and tag != "latest" and any(c.isdigit() for c in tag), image


def test_images_start_what_the_chart_and_the_operator_run():
    operator_args = deployment(template("helm4", "default"))["spec"]["template"]["spec"]["containers"][0]["args"]
    assert image_instructions("operator", "ENTRYPOINT") == ['["kubetune"]'] and operator_args[0] == "operator"
    # Job pods run `python -m trainer_entrypoint …`: the image's venv must come first on PATH.
    for image in ("trainer", "evaluator"):
        assert any("PATH=/opt/venv/bin:$PATH" in env for env in image_instructions(image, "ENV"))


def test_chart_and_operator_default_to_these_images():
    values = yaml.safe_load((REPO / "charts" / "kubetune" / "values.yaml").read_text())
    settings = RenderSettings()
    cuda = (IMAGES / "cuda.Dockerfile").read_text()
    assert values["trainer"]["image"] == settings.trainer_image
    assert values["evaluator"]["image"] == settings.evaluator_image
    assert f"--target trainer -t {settings.trainer_image} ." in cuda
    assert f"--target evaluator -t {settings.evaluator_image} ." in cuda
    assert f"-t {values['image']['repository']}:" in (IMAGES / "operator.Dockerfile").read_text()


def test_every_package_is_in_pyproject_so_the_images_install_it():
    """The images install kubetune without -e: a package pyproject.toml does not list is left out."""
    import tomllib

    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = set()
    for root, name in (("operator/kubetune", "kubetune"), ("trainer_entrypoint", "trainer_entrypoint")):
        for init in (REPO / root).rglob("__init__.py"):
            found.add(".".join((name, *init.parent.relative_to(REPO / root).parts)))
    assert found == listed
