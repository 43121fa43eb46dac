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
from ..contract.gpus import GPU_NAMES
from ..render import RenderSettings, output_location, render_job
from ..yamlio import UnreadableYAML, dump_all, load_all
from .cache import CACHE_DIR_OPTION, cache, cache_root
from . import cluster
from .cluster import cluster_options, is_run_dir, scale_job, scale_run_dir


@dataclass
class LoadedJob:
    label: str  # how problems name where the job came from: FILE, or FILE[N] in multi-document files
    job: Optional[FineTuneJob]
    problems: list[Problem]


def load_jobs(path: str) -> Iterator[LoadedJob]:
    """Every FineTuneJob in a YAML file, each either parsed or with its problems."""
    try:
        documents = load_all(Path(path).read_bytes())
    except OSError as error:
        yield LoadedJob(path, None, [Problem("", f"cannot read: {error.strerror or error}")])
        return
    except UnreadableYAML as error:
        yield LoadedJob(path, None, [Problem("", str(error))])
        return
    if not documents:
        yield LoadedJob(path, None, [Problem("", "no FineTuneJob in this file")])
    names: set[tuple[Any, Any]] = set()
    for index, document in enumerate(documents, start=1):
        label = path if len(documents) == 1 else f"{path}[{index}]"
        try:
            job = parse_job(document)
        except InvalidJob as error:
            yield LoadedJob(label, None, error.problems)
        except RecursionError:
            yield LoadedJob(label, None, [Problem("", "nested too deeply")])
        else:
            key = (job.metadata.namespace, job.metadata.name)
            yield LoadedJob(label, None if key in names else job, [Problem(
                "metadata.name", f"another job of this file is named {job.metadata.name}")] if key in names else [])
            names.add(key)


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
    from ..planning import refusal

    failed = False
    for path in files:
        for loaded in load_jobs(path):
            if loaded.job and (why := refusal(loaded.job)):
                loaded.problems.append(Problem("spec.distributed.strategy", why))
                loaded.job = None
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
@click.option("--leader-elect", "lease", default=None, metavar="NAMESPACE/NAME",
              help="Several replicas: the one holding this coordination.k8s.io Lease reconciles.")
@click.option("--trainer-image", default=RenderSettings.trainer_image, show_default=True)
@click.option("--evaluator-image", default=RenderSettings.evaluator_image, show_default=True)
@click.option("--interval", default=10.0, show_default=True,
              help="Seconds between resyncs of each job (clocks, deadlines, progress); changes act at once.")
@click.option("--workers", default=8, show_default=True, help="Jobs reconciled at the same time.")
@click.option("--qps", default=100.0, show_default=True, help="API requests per second, on average (as client-go).")
@click.option("--burst", default=200, show_default=True, help="API requests allowed at once above --qps.")
@click.option("--watch-timeout", "watch_seconds", type=int, default=None,
              help="Seconds each watch lasts before its kind is listed again (whatever a watch missed is "
                   "corrected within this; default 300, as WATCH_SECONDS in handlers/cache.py); it also "
                   "bounds how long /healthz tolerates an informer's silence.")
@click.option("--job-pod-defaults", "defaults_file", default=None, type=click.Path(exists=True, dir_okay=False),
              help="YAML: imagePullPolicy, gpuNodeSelector, gpuTolerations, trainerResources, "
                   "evaluatorResources for the pods of every job (the chart's job-pod-defaults).")
def operator(namespaces, liveness_port, metrics_port, lease, trainer_image, evaluator_image, interval,
             workers, qps, burst, watch_seconds, defaults_file) -> None:
    """Run the FineTuneJob controller (cluster-wide unless --namespace is given)."""
    from ..handlers.main import Pace, run_operator

    defaults = yaml.safe_load(Path(defaults_file).read_text()) or {} if defaults_file else {}
    settings = RenderSettings.from_job_pod_defaults(defaults, trainer_image=trainer_image,
                                                    evaluator_image=evaluator_image)
    if lease and "/" not in lease.strip("/"):
        raise click.BadParameter("give the Lease as NAMESPACE/NAME", param_hint="--leader-elect")
    run_operator(list(namespaces), liveness_port, metrics_port, lease, settings,
                 Pace(interval=interval, workers=workers, qps=qps, burst=burst,
                      **({"watch_seconds": watch_seconds} if watch_seconds else {})))


def _one_job(file: str, name: Optional[str]) -> FineTuneJob:
    """The job of FILE that --job names (or its only one); exit 2 on any problem in the file."""
    loaded = list(load_jobs(file))
    for item in loaded:
        _report(item)
    if any(item.problems for item in loaded):
        sys.exit(2)
    return _pick([item.job for item in loaded if item.job], name, file)


def _pick(jobs: list[FineTuneJob], name: Optional[str], file: str) -> FineTuneJob:
    names = [job.metadata.name for job in jobs]
    if name is None and len(jobs) == 1:
        return jobs[0]
    if name in names:
        return jobs[names.index(name)]
    click.echo(f"{file}: name a job with --job ({', '.join(names)})", err=True)
    sys.exit(2)


def local_overrides(job: FineTuneJob) -> dict[str, str]:
    """This machine's caches win over the pod's, and local processes share the CPU cores."""
    import os

    overrides = {key: os.environ[key] for key in ("HF_HOME", "TORCH_EXTENSIONS_DIR") if key in os.environ}
    if "OMP_NUM_THREADS" not in os.environ:
        processes = job.spec.resources.nodes * job.spec.resources.processes
        overrides["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // processes))
    return overrides


@main.command()
@click.argument("file")
@click.option("--job", "job_name", default=None, help="Which job of a file with several.")
@click.option("--run-dir", default=None, help="Folder for the job's volumes and logs.  [default: kubetune-runs/NAME]")
@click.option("--nodes", type=click.IntRange(min=1), default=None,
              help="Worker pods to start with, instead of spec.resources.nodes.")
@CACHE_DIR_OPTION
def run(file: str, job_name: Optional[str], run_dir: Optional[str], nodes: Optional[int],
        cache_dir: Optional[str]) -> None:
    """Run a FineTuneJob on this machine: the operator's pods as local processes.

    Running the same command again resumes from the last checkpoint (or, after success,
    only evaluates again). An elastic job can be resized while it runs with `kubetune scale`.
    Exit code 0: Succeeded; 1: Failed; 2: invalid input; 130: stopped.
    """
    import time

    from rich.console import Console

    from ..local.console import RunDisplay, summary_table
    from ..local.run import LocalRun

    job = _one_job(file, job_name)
    if nodes is not None:
        job = _with_nodes(job, nodes, f"{file}: --nodes")
    upstream = [s for s in (job.spec.model.source, job.spec.dataset.source) if s.startswith("job://")]
    if upstream:
        click.echo(f"{file}: {upstream[0]}: job:// sources need the operator; locally, point at the upstream "
                   f"run's output folder (kubetune-runs/NAME/output/model)", err=True)
        sys.exit(2)
    folder = Path(run_dir or Path("kubetune-runs") / job.metadata.name)
    console = Console()
    local = LocalRun.prepare(job, folder, folder / "cache", local_overrides(job), cache_root(cache_dir))
    console.print(f"kubetune: running {job.metadata.name} in {folder} (pod logs: {folder}/pods/*/log.txt)")
    started = time.monotonic()
    try:
        with RunDisplay(console) as display:
            decision = local.run(display.tick)
    except KeyboardInterrupt:
        checkpoint = local.newest_checkpoint()
        # soft_wrap: a path broken over lines cannot be copied.
        console.print(f"stopped; every process is gone. Last checkpoint: {checkpoint or 'none yet'}. "
                      f"Run the same command again to resume.", soft_wrap=True)
        sys.exit(130)
    console.print(summary_table(decision, local.completion(), local.model_dir, time.monotonic() - started,
                                display.first_step_seconds))
    failure = decision.status.failure
    logs = (failure.last_logs if failure else None) or (local.cluster.failed_worker_logs() if failure else "")
    if logs:
        console.print(f"last lines of {failure.worker or 'the failed pod'}:\n{logs}", markup=False)
    sys.exit(0 if decision.phase == "Succeeded" else 1)


def _with_nodes(job: FineTuneJob, nodes: int, label: str, old: Optional[FineTuneJob] = None) -> FineTuneJob:
    """The job at another node count, checked by the rules the API server applies to that change."""
    document = job.wire()
    document["spec"]["resources"]["nodes"] = nodes
    try:
        return parse_job(document, old_document=old.wire() if old else None)
    except InvalidJob as error:
        for problem in error.problems:
            click.echo(f"{label}: {problem}", err=True)
        sys.exit(2)


@main.command()
@click.argument("target", metavar="RUN-DIR|NAME")
@click.argument("nodes", type=click.IntRange(min=1))
@cluster_options
def scale(target: str, nodes: int, kubeconfig: Optional[str], context: Optional[str],
          namespace: Optional[str]) -> None:
    """Resize an elastic job to NODES worker pods: the one `kubetune run` is running in RUN-DIR,
    or the cluster's FineTuneJob NAME (as `kubectl scale ftj/NAME --replicas=NODES`)."""
    if is_run_dir(target):
        scale_run_dir(target, nodes)
    else:
        scale_job(target, nodes, kubeconfig, context, namespace)


@main.command()
@click.argument("file")
@click.option("--job", "job_name", default=None, help="Which job of a file with several.")
@click.option("--gpu", "gpu_name", type=click.Choice(GPU_NAMES, case_sensitive=False), default=None,
              help="Plan for this GPU (default: what the job's node selector or GPU resource names).")
@click.option("--gpu-memory", type=click.FloatRange(min=1), default=None, help="GPU memory in GiB (overrides --gpu's).")
@click.option("--gpu-tflops", type=click.FloatRange(min=1), default=None, help="Dense bf16 peak TFLOP/s per GPU.")
@click.option("--model-config", type=click.Path(exists=True, dir_okay=False), default=None,
              help="The model's config.json, when its source cannot be read from here.")
@click.option("--pvc", "claims", multiple=True, metavar="CLAIM=DIR", help="Where a pvc:// claim is mounted here.")
@click.option("--output", "-o", type=click.Choice(["text", "json"]), default="text", show_default=True)
def plan(file: str, job_name: Optional[str], gpu_name: Optional[str], gpu_memory: Optional[float],
         gpu_tflops: Optional[float], model_config: Optional[str], claims: tuple[str, ...], output: str) -> None:
    """Print a job's resource plan: parameters, per-GPU memory of each strategy, what
    `distributed.strategy: auto` picks and why, and the batch in sequences and tokens.

    Needs no cluster and reads no weights. Exit code 0: planned; 1: auto cannot fit the job;
    2: invalid input or a model config that cannot be read.
    """
    import json

    from ..contract.gpus import gpu_named
    from ..planning import Unreadable, chosen_gpu, model_config as read_model_config, plan_job, render_text

    job = _one_job(file, job_name)
    mounts = dict(claim.partition("=")[::2] for claim in claims)
    try:
        config = (json.loads(Path(model_config).read_text()) if model_config
                  else read_model_config(job.spec.model.source, job.spec.model.revision, mounts))
        result = plan_job(job, config, chosen_gpu(job, gpu_named(gpu_name) if gpu_name else None, gpu_memory,
                                                  gpu_tflops))
    except Unreadable as error:
        click.echo(f"{file}: spec.model.source: {error.why}", err=True)
        sys.exit(2)
    except (ValueError, KeyError, TypeError) as error:
        click.echo(f"{file}: the model's config has no decoder dimensions to plan with ({error!r})", err=True)
        sys.exit(2)
    click.echo(result.encode(indent=2) if output == "json" else render_text(result))
    sys.exit(1 if result.refused else 0)


@main.command()
def crd() -> None:
    """Print the FineTuneJob CustomResourceDefinition generated from the API models."""
    click.echo(render_crd_yaml(), nl=False)


main.add_command(cache)
main.add_command(cluster.get)
main.add_command(cluster.describe)
main.add_command(cluster.logs)
main.add_command(cluster.wait)
main.add_command(cluster.delete)
main.add_command(cluster.suspend)
main.add_command(cluster.resume)

if __name__ == "__main__":
    main()
