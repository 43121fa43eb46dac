"""`kubetune get|describe|logs|wait|delete|suspend|resume` and `kubetune scale NAME`:
FineTuneJobs in a cluster, through kubetune.Client, with kubectl's --kubeconfig, --context
and -n. Everything shown is what the operator wrote in status, its Events, and the pods'
own reports."""

from __future__ import annotations

import contextlib
import json
import re
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import click

from ..api.crd import PRINTER_COLUMNS
from ..api.models import JOB_NAME_PATTERN, PHASES, EvaluationStatus, FineTuneJobStatus
from ..api.validation import InvalidJob
from ..client import ApiError, Client, ConfigError, Job, JobFailed, JobNotFound, PodState, WaitTimeout
from ..client.job import Event, parse_time
from ..client.local import scale_run
from ..client.roles import ROLES
from ..local.console import throughput_text
from ..local.run import JOB_FILE
from ..yamlio import dump

RESOURCE = "finetunejob.kubetune.io"
EXIT_TIMEOUT = 124  # as timeout(1)


def cluster_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """kubectl's options for reaching a cluster."""
    command = click.option("-n", "--namespace", default=None, help="Namespace (default: the context's).")(command)
    command = click.option("--context", default=None, help="The kubeconfig context to use.")(command)
    return click.option("--kubeconfig", default=None, type=click.Path(dir_okay=False),
                        help="Path to the kubeconfig file (default: KUBECONFIG or ~/.kube/config).")(command)


@contextlib.contextmanager
def reported() -> Iterator[None]:
    """The client's errors as kubectl prints them, with its exit codes (1; 2 for a refused spec)."""
    try:
        yield
    except (ConfigError, ApiError) as error:
        code = f" ({error.reason})" if isinstance(error, ApiError) and error.reason else ""
        prefix = "error" if isinstance(error, ConfigError) else f"Error from server{code}"
        click.echo(f"{prefix}: {getattr(error, 'message', error)}", err=True)
        sys.exit(1)
    except InvalidJob as error:
        for problem in error.problems:
            click.echo(f"{problem}", err=True)
        sys.exit(2)


def connect(kubeconfig: Optional[str], context: Optional[str], namespace: Optional[str]) -> Client:
    with reported():
        return Client(namespace=namespace, context=context, kubeconfig=kubeconfig)


# --- formatting ---------------------------------------------------------------------------


def age(since: Optional[datetime], now: Optional[datetime] = None) -> str:
    """How long ago, as kubectl shows it: 45s, 12m, 5h, 3d."""
    if since is None:
        return "-"
    seconds = max(0, int(((now or datetime.now(timezone.utc)) - since).total_seconds()))
    for unit, size, limit in (("s", 1, 120), ("m", 60, 180 * 60), ("h", 3600, 48 * 3600)):
        if seconds < limit:
            return f"{seconds // size}{unit}"
    return f"{seconds // 86400}d"


def number(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.4g}"


def interval(bounds: Optional[list[float]]) -> str:
    return f" [{bounds[0]:.4g}, {bounds[1]:.4g}]" if bounds else ""


def table(rows: list[list[str]], indent: str = "") -> str:
    """Columns aligned as kubectl aligns them, three spaces apart."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(indent + "   ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
                     for row in rows)


_PATH_PART = re.compile(r'\.([\w/-]+)|\[\?\(@\.(\w+)=="([^"]*)"\)\]|\[(\d+)\]')


def json_path(document: Any, path: str) -> Any:
    """The first value a printer column's jsonPath picks (the forms the CRD uses: .a.b,
    [?(@.key=="value")], [N]), or None."""
    values = [document]
    for field, key, wanted, index in _PATH_PART.findall(path):
        if field:
            values = [value.get(field) for value in values if isinstance(value, dict)]
        elif key:
            values = [item for value in values if isinstance(value, list) for item in value
                      if isinstance(item, dict) and str(item.get(key)) == wanted]
        else:
            values = [value[int(index)] for value in values if isinstance(value, list) and len(value) > int(index)]
        values = [value for value in values if value is not None]
    return values[0] if values else None


def cell(value: Any, kind: str) -> str:
    if value is None:
        return ""
    if kind == "date":
        return age(datetime.fromisoformat(str(value).replace("Z", "+00:00")))
    if kind == "number" and isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def jobs_table(jobs: list[Job], wide: bool, namespaces: bool) -> str:
    """`kubectl get ftj` from the CRD's own printer columns (of the typed job: defaults filled,
    as the API server fills them)."""
    columns = [c for c in PRINTER_COLUMNS if wide or not c.get("priority")]
    rows = [(["NAMESPACE"] if namespaces else []) + ["NAME"] + [c["name"].upper() for c in columns]]
    for job in jobs:
        document = job.wire()
        rows.append(([job.namespace] if namespaces else []) + [job.name] +
                    [cell(json_path(document, c["jsonPath"]), c["type"]) for c in columns])
    return table(rows)


# --- commands -----------------------------------------------------------------------------


@click.command()
@click.argument("name", required=False)
@click.option("-A", "--all-namespaces", is_flag=True, help="Jobs of every namespace.")
@click.option("-l", "--selector", default=None, help="Label selector, e.g. team=nlp.")
@click.option("-o", "--output", type=click.Choice(["wide", "yaml", "json"]), default=None)
@cluster_options
def get(name: Optional[str], all_namespaces: bool, selector: Optional[str], output: Optional[str],
        kubeconfig: Optional[str], context: Optional[str], namespace: Optional[str]) -> None:
    """List FineTuneJobs (or show NAME) with the columns of `kubectl get ftj`."""
    client = connect(kubeconfig, context, namespace)
    with reported():
        jobs = [client.get(name)] if name else client.list(label_selector=selector, all_namespaces=all_namespaces)
    if output in ("yaml", "json"):
        documents = [job.raw for job in jobs]
        document = documents[0] if name else {"apiVersion": "v1", "kind": "List", "items": documents}
        click.echo(json.dumps(document, indent=2) if output == "json" else dump(document), nl=output == "json")
    elif not jobs:
        click.echo("No resources found" + ("" if all_namespaces else f" in {client.namespace} namespace") + ".",
                   err=True)
    else:
        click.echo(jobs_table(jobs, output == "wide", all_namespaces))


@click.command()
@click.argument("name")
@cluster_options
def describe(name: str, kubeconfig: Optional[str], context: Optional[str], namespace: Optional[str]) -> None:
    """Show a FineTuneJob: phase and conditions, progress, workers, the failure with its last
    log lines, the evaluation with its intervals and verdict, where the model went, and Events."""
    client = connect(kubeconfig, context, namespace)
    with reported():
        job = client.get(name)
        pods = client.pods(name)
        events = client.events(name)
    click.echo(describe_text(job, pods, events))


def describe_text(job: Job, pods: list[PodState], events: list[Event]) -> str:
    spec, status = job.spec, job.status or FineTuneJobStatus()
    elastic = spec.resources.elastic
    lines = [f"Name:         {job.name}", f"Namespace:    {job.namespace}",
             f"Created:      {job.created_at or '-'} ({age(job.created_at)} ago)",
             f"Method:       {spec.method}, model {spec.model.source}, dataset {spec.dataset.source}",
             f"Nodes:        {spec.resources.nodes}" + (f" (elastic {elastic.min_nodes}..{elastic.max_nodes})"
                                                        if elastic else "")
             + (f", strategy {status.distributed.strategy}: {status.distributed.reason}" if status.distributed
                else ""),
             f"Phase:        {job.phase or '(not reported yet)'}"]
    if status.conditions:
        rows = [["TYPE", "STATUS", "REASON", "SINCE", "MESSAGE"]] + [
            [c.type, c.status, c.reason, age(parse_time(c.last_transition_time)), c.message.splitlines()[0][:120]
             if c.message else ""] for c in status.conditions]
        lines += ["Conditions:", table(rows, "  ")]
    lines += _progress_lines(status) + _worker_lines(status, pods) + _failure_lines(status)
    lines += _evaluation_lines(status.evaluation) + _output_lines(status)
    if events:
        rows = [["AGE", "TYPE", "REASON", "MESSAGE"]] + [
            [age(e.time), e.type, e.reason, e.message.splitlines()[0][:160] if e.message else ""] for e in events]
        lines += ["Events:", table(rows, "  ")]
    else:
        lines += ["Events:       <none>"]
    return "\n".join(lines)


def _progress_lines(status: FineTuneJobStatus) -> list[str]:
    progress = status.progress
    if progress is None:
        return []
    parts = [progress.display or f"{progress.step}/{progress.total_steps or '-'}", f"loss {number(progress.loss)}",
             throughput_text(progress)]
    if progress.eta_seconds is not None:
        parts.append(f"ETA {progress.eta_seconds:.0f}s")
    if progress.last_checkpoint:
        parts.append(f"last checkpoint {progress.last_checkpoint}")
    return ["Progress:     " + ", ".join(parts)]


def _worker_lines(status: FineTuneJobStatus, pods: list[PodState]) -> list[str]:
    workers = status.workers
    if workers is None:
        return []
    lines = [f"Workers:      {workers.desired} desired, {workers.ready} ready, {workers.restarts} restarts, "
             f"{workers.disruptions} disruptions, {workers.out_of_memory} out of memory"]
    if pods:
        rows = [["POD", "PHASE", "READY", "RESTARTS", "WAITING", "LAST EXIT"]] + [
            [p.name, p.phase, str(p.ready).lower(), str(p.restarts), (p.waiting or "")[:100], p.last_exit or ""]
            for p in pods]
        lines.append(table(rows, "  "))
    for resize in workers.resizes:
        lines.append(f"  resized {resize.from_nodes} -> {resize.to_nodes} at {resize.time}"
                     + (f", from {resize.checkpoint}" if resize.checkpoint else "")
                     + (f", global batch {resize.global_batch_size}" if resize.global_batch_size else ""))
    return lines


def _failure_lines(status: FineTuneJobStatus) -> list[str]:
    failure = status.failure
    if failure is None:
        return []
    lines = [f"Failure:      {failure.reason}: {failure.message}"]
    if failure.worker:
        lines.append(f"  worker {failure.worker}" + (f", exit code {failure.exit_code}"
                                                      if failure.exit_code is not None else ""))
    if failure.last_logs:
        lines += ["  last lines:"] + [f"    {line}" for line in failure.last_logs.splitlines()]
    return lines


def _evaluation_lines(evaluation: Optional[EvaluationStatus]) -> list[str]:
    if evaluation is None or not (evaluation.metrics or evaluation.verdict):
        return []
    lines = ["Evaluation:   " + (f"verdict {evaluation.verdict}" if evaluation.verdict else "")
             + (f" (report {evaluation.report})" if evaluation.report else "")]
    rows = [["METRIC", "TUNED [95% CI]", "BASE [95% CI]", "DELTA [95% CI]"]] + [
        [name, number(v.tuned) + interval(v.tuned_interval),
         "" if v.base is None else number(v.base) + interval(v.base_interval),
         "" if v.delta is None else f"{v.delta:+.4g}" + interval(v.delta_interval)]
        for name, v in evaluation.metrics.items()]
    lines.append(table(rows, "  "))
    lines += [f"  gate {gate.describe()}" for gate in evaluation.gates]
    return lines


def _output_lines(status: FineTuneJobStatus) -> list[str]:
    output = status.output
    if output is None:
        return []
    lines = [f"Model:        claim {output.claim_name}, folder {output.path}"]
    lines += [f"  published {p.url} ({p.files} files, revision {p.revision or '-'})" for p in output.published or []]
    return lines


@click.command()
@click.argument("name")
@click.option("--worker", default=0, show_default=True, help="Worker (or generation server) ordinal.")
@click.option("--role", type=click.Choice(ROLES), default="worker", show_default=True,
              help="Whose log: a worker, the generation server, or the newest evaluator, initializer or publisher pod.")
@click.option("-f", "--follow", is_flag=True, help="Follow the log, across container restarts, until the job is "
                                                   "done with the pod.")
@click.option("--tail", "tail_lines", type=int, default=None, help="Only the last N lines.")
@click.option("-p", "--previous", is_flag=True, help="The log of the container before the last restart.")
@cluster_options
def logs(name: str, worker: int, role: str, follow: bool, tail_lines: Optional[int], previous: bool,
         kubeconfig: Optional[str], context: Optional[str], namespace: Optional[str]) -> None:
    """Print the log of a FineTuneJob's pod (worker 0 unless told)."""
    client = connect(kubeconfig, context, namespace)
    with reported():
        try:
            for line in client.logs(name, worker=worker, role=role, follow=follow, tail_lines=tail_lines,
                                    previous=previous):
                click.echo(line)
        except KeyboardInterrupt:
            sys.exit(130)


def parse_duration(text: Optional[str]) -> Optional[float]:
    """30s, 30m, 2h, 1h30m, or plain seconds; None (no limit) when not given."""
    if text is None:
        return None
    parts = re.fullmatch(r"((\d+(\.\d+)?)(h|m|s|ms)?)+", text.strip())
    if not parts:
        raise click.BadParameter(f"{text!r}: expected a duration such as 90s, 30m or 2h", param_hint="--timeout")
    scale = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "": 1}
    return sum(float(value) * scale[unit] for value, _, unit in re.findall(r"(\d+(\.\d+)?)(ms|h|m|s)?", text))


@click.command()
@click.argument("name")
@click.option("--for", "phases", default="Succeeded", show_default=True,
              help="The phase (or phases, comma-separated) to wait for: " + ", ".join(PHASES) + ".")
@click.option("--timeout", default=None, help="Give up after this long (90s, 30m, 2h); default: no limit.")
@cluster_options
def wait(name: str, phases: str, timeout: Optional[str], kubeconfig: Optional[str], context: Optional[str],
         namespace: Optional[str]) -> None:
    """Wait for a FineTuneJob, with `kubetune run`'s live line and its Events.

    Exit code 0: the phase was reached; 1: the job failed (its failure is printed); 124: timed out.
    """
    from rich.console import Console

    from ..client.display import LiveLine

    until = tuple(phase.strip().capitalize() for phase in phases.split(","))
    if unknown := [phase for phase in until if phase not in PHASES]:
        raise click.BadParameter(f"{', '.join(unknown)}: expected {', '.join(PHASES)}", param_hint="--for")
    seconds = parse_duration(timeout)
    client = connect(kubeconfig, context, namespace)
    console = Console()
    shown: Optional[set[tuple[Any, ...]]] = None

    def tick(job: Job) -> None:
        nonlocal shown
        events = client.events(name)
        keys = [(e.time, e.reason, e.message) for e in events]
        new = tuple(e for e, key in zip(events, keys) if shown is not None and key not in shown)
        shown = set(keys)
        line.update(job, new)

    line = LiveLine(console)
    try:
        with reported():
            job = client.wait(name, until=until, timeout_s=seconds, callback=tick, progress=False)
    except JobFailed as failed:
        line.close()
        console.print(str(failed), markup=False, highlight=False, soft_wrap=True)
        sys.exit(1)
    except WaitTimeout as timed_out:
        line.close()
        click.echo(f"timed out: {timed_out}", err=True)
        sys.exit(EXIT_TIMEOUT)
    except KeyboardInterrupt:
        sys.exit(130)
    finally:
        line.close()
    click.echo(f"{RESOURCE}/{name} {job.phase}")


@click.command()
@click.argument("name")
@click.option("--wait", "wait_gone", is_flag=True, help="Return once the job is gone.")
@cluster_options
def delete(name: str, wait_gone: bool, kubeconfig: Optional[str], context: Optional[str],
           namespace: Optional[str]) -> None:
    """Delete a FineTuneJob and everything it created."""
    client = connect(kubeconfig, context, namespace)
    with reported():
        client.delete(name, wait=wait_gone)
    click.echo(f'{RESOURCE} "{name}" deleted')


def _run_policy_command(verb: str, done: str, doc: str) -> click.Command:
    @click.command(name=verb, help=doc)
    @click.argument("name")
    @cluster_options
    def command(name: str, kubeconfig: Optional[str], context: Optional[str], namespace: Optional[str]) -> None:
        client = connect(kubeconfig, context, namespace)
        with reported():
            getattr(client, verb)(name)
        click.echo(f"{RESOURCE}/{name} {done}")

    return command


suspend = _run_policy_command("suspend", "suspended",
                              "Suspend a FineTuneJob: its workers go to zero (spec.runPolicy.suspend).")
resume = _run_policy_command("resume", "resumed", "Resume a suspended FineTuneJob from its last complete checkpoint.")


# --- kubetune scale: a run folder, or a cluster job -----------------------------------------


def is_run_dir(target: str) -> bool:
    """A folder of `kubetune run` (a path, or a folder holding its job file), not a job's name."""
    return "/" in target or (Path(target) / JOB_FILE).exists() or not re.match(JOB_NAME_PATTERN, target)


def scale_run_dir(run_dir: str, nodes: int) -> None:
    try:
        running = scale_run(Path(run_dir), nodes)
    except JobNotFound:
        click.echo(f"{run_dir}: no job of `kubetune run` here ({JOB_FILE} is missing or unreadable)", err=True)
        sys.exit(2)
    except InvalidJob as error:
        for problem in error.problems:
            click.echo(f"{run_dir}: {problem}", err=True)
        sys.exit(2)
    click.echo(f"{running.metadata.name}: scaling from {running.spec.resources.nodes} to {nodes} nodes")


def scale_job(name: str, nodes: int, kubeconfig: Optional[str], context: Optional[str],
              namespace: Optional[str]) -> None:
    client = connect(kubeconfig, context, namespace)
    with reported():
        before = client.get(name).spec.resources.nodes
        try:
            client.scale(name, nodes)
        except InvalidJob as error:
            for problem in error.problems:
                click.echo(f"{name}: {problem}", err=True)
            sys.exit(2)
    click.echo(f"{name}: scaling from {before} to {nodes} nodes")

