"""The `kubetune` command."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

import click
import yaml

from ..api.crd import render_crd_yaml
from ..api.models import FineTuneJob
from ..api.validation import InvalidJob, Problem, parse_job
from ..render import RenderSettings, output_location, render_job
from ..yamlio import dump_all


@dataclass
class LoadedJob:
    label: str  # how problems name where the job came from: FILE, or FILE[N] in multi-document files
    job: Optional[FineTuneJob]
    problems: list[Problem]


def load_jobs(path: str) -> Iterator[LoadedJob]:
    """Every FineTuneJob in a YAML file, each either parsed or with its problems."""
    try:
        text = Path(path).read_text()
    except OSError as error:
        yield LoadedJob(path, None, [Problem("", f"cannot read: {error.strerror or error}")])
        return
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        reason = getattr(error, "problem", None) or str(error)
        yield LoadedJob(path, None, [Problem("", f"{where}invalid YAML: {reason}")])
        return
    if not documents:
        yield LoadedJob(path, None, [Problem("", "no FineTuneJob in this file")])
    for index, document in enumerate(documents, start=1):
        label = path if len(documents) == 1 else f"{path}[{index}]"
        try:
            yield LoadedJob(label, parse_job(document), [])
        except InvalidJob as error:
            yield LoadedJob(label, None, error.problems)


def _report(loaded: LoadedJob) -> None:
    for problem in loaded.problems:
        click.echo(f"{loaded.label}: {problem}", err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="kubetune")
def main() -> None:
    """Post-train LLMs with TRL on Kubernetes: one FineTuneJob, distributed training, evaluation."""


@main.command()
@click.argument("files", nargs=-1, required=True)
def validate(files: tuple[str, ...]) -> None:
    """Check FineTuneJob files; print FILE: FIELD: REASON for every problem."""
    failed = False
    for path in files:
        for loaded in load_jobs(path):
            _report(loaded)
            failed = failed or bool(loaded.problems)
            if loaded.job:
                click.echo(f"{loaded.label}: {loaded.job.metadata.name} is valid")
    sys.exit(1 if failed else 0)


@main.command()
@click.argument("file")
@click.option("--trainer-image", default=RenderSettings.trainer_image, show_default=True)
@click.option("--evaluator-image", default=RenderSettings.evaluator_image, show_default=True)
@click.option("--uid", default=None, help="The job's uid, for owner references (assigned by the API server).")
def render(file: str, trainer_image: str, evaluator_image: str, uid: Optional[str]) -> None:
    """Print, as multi-document YAML, what the operator creates for the jobs in FILE."""
    loaded = list(load_jobs(file))
    for item in loaded:
        _report(item)
    if any(item.problems for item in loaded):
        sys.exit(1)
    jobs = [item.job for item in loaded if item.job]
    # job:// sources may name other jobs of the same file.
    outputs = {job.metadata.name: output_location(job) for job in jobs}
    settings = RenderSettings(trainer_image=trainer_image, evaluator_image=evaluator_image)
    documents: list[Any] = []
    for job in jobs:
        if uid:
            job = job.model_copy(update={"metadata": job.metadata.model_copy(update={"uid": uid})})
        documents += render_job(job, settings, outputs).all_objects()
    click.echo(dump_all(documents), nl=False)


@main.command()
@click.option("--namespace", "namespaces", multiple=True, help="Watch only these namespaces (repeatable).")
@click.option("--liveness-port", default=8080, show_default=True, help="Serves /healthz.")
@click.option("--metrics-port", default=9090, show_default=True, help="Serves the operator's /metrics.")
@click.option("--peering", default=None, help="KopfPeering name: one active replica among several.")
@click.option("--trainer-image", default=RenderSettings.trainer_image, show_default=True)
@click.option("--evaluator-image", default=RenderSettings.evaluator_image, show_default=True)
@click.option("--interval", default=10.0, show_default=True, help="Seconds between reconciles of each job.")
def operator(namespaces, liveness_port, metrics_port, peering, trainer_image, evaluator_image, interval) -> None:
    """Run the FineTuneJob controller (cluster-wide unless --namespace is given)."""
    from ..handlers.main import run_operator

    run_operator(list(namespaces), liveness_port, metrics_port, peering,
                 RenderSettings(trainer_image=trainer_image, evaluator_image=evaluator_image), interval)


@main.command()
def crd() -> None:
    """Print the FineTuneJob CustomResourceDefinition generated from the API models."""
    click.echo(render_crd_yaml(), nl=False)


if __name__ == "__main__":
    main()
