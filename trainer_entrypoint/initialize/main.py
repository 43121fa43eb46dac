"""The initializer's command: fetch every remote source of the job into the cache, then leave the
report as the job's manifest and as the termination message."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Iterator, Optional

from kubetune import contract
from kubetune.contract.config import TrainerConfig
from kubetune.contract.initialization import FetchedSource, InitializationReport, human_bytes
from kubetune.contract.progress import PROGRESS_PATH

from ..errors import PermanentError, exit_code_for, write_termination_message
from ..sources import Slot
from .fetch import fetch
from .plan import pending, remote_for, wanted
from .progress import ProgressState, serve


def initialize(config: TrainerConfig) -> InitializationReport:
    slots = wanted(config)
    if slots and config.cache is None:
        raise PermanentError("the trainer config names no cache for the initializer (config.cache)")
    _check_online(slots)
    state = ProgressState(InitializationReport(sources=[pending(slot) for slot in slots]))
    server = start_progress(state)
    try:
        for index, slot in enumerate(slots):
            started = time.monotonic()
            label = f"{slot.role} {slot.source}"
            fetched = fetch(remote_for(slot), label, Path(config.cache.root), state, index)
            print(summary_line(slot, fetched, time.monotonic() - started), flush=True)
    finally:
        if server:
            server.shutdown()
            server.server_close()
    return state.finished()


def _check_online(slots: list[Slot]) -> None:
    if not any(slot.location.kind == "hf" for slot in slots):
        return
    from huggingface_hub import constants

    if constants.is_offline_mode():
        source = next(slot.source for slot in slots if slot.location.kind == "hf")
        raise PermanentError(f"{source}: HF_HUB_OFFLINE is set in the initializer's env, so it cannot fetch "
                             f"from the Hub (unset it in spec.resources.env)")


def start_progress(state: ProgressState):
    """Serve the report so far; a busy port costs the progress, never the downloads."""
    port = int(os.environ.get(contract.ENV_METRICS_PORT, contract.METRICS_PORT))
    try:
        server = serve(state, port)
    except OSError as error:
        print(f"kubetune: cannot serve progress on port {port}: {error}", flush=True)
        return None
    print(f"kubetune: initializer progress on :{server.server_address[1]}{PROGRESS_PATH}", flush=True)
    return server


def summary_line(slot: Slot, fetched: FetchedSource, seconds: float) -> str:
    """`kubetune: model hf://Qwen/Qwen2.5-0.5B@<sha>: cached`, or what it downloaded."""
    where = f"kubetune: {slot.role} {fetched.source}@{fetched.revision}"
    if fetched.cached:
        return f"{where}: cached"
    return f"{where}: downloaded {human_bytes(fetched.downloaded_bytes)} in {seconds:.0f} s"


def write_manifest(report: InitializationReport, manifest: Path) -> None:
    """Atomically: a pod never reads half a manifest."""
    manifest.parent.mkdir(parents=True, exist_ok=True)
    written = manifest.with_name(f".{manifest.name}.{os.getpid()}.tmp")
    written.write_text(report.encode(indent=1))
    os.replace(written, manifest)


def termination_text(report: InitializationReport) -> str:
    """The report within the termination message limit: per-source detail goes first, then (only
    if it must) the last sources."""
    text = ""
    for text in _shorter_and_shorter(report):
        if len(text.encode()) <= contract.TERMINATION_MESSAGE_LIMIT:
            break
    return text


def _shorter_and_shorter(report: InitializationReport) -> Iterator[str]:
    yield report.encode()
    brief = [s.model_copy(update={"bytes_done": 0, "downloaded_bytes": 0, "bytes_total": None,
                                  "requested_revision": None, "repo_type": None}) for s in report.sources]
    for count in range(len(brief), -1, -1):
        shown = InitializationReport(sources=brief[:count], seconds=report.seconds)
        yield shown.model_dump_json(by_alias=True, exclude_none=True, exclude_defaults=True)


def main(config_path: Optional[Path] = None) -> int:
    from ..config import load_config

    try:
        config = load_config(config_path, use_cache=False)
        report = initialize(config)
    except Exception as error:
        code = exit_code_for(error)
        if code is None:
            raise  # retryable: the Job retries the pod, which resumes from what is in the cache
        return code
    if config.cache is not None:
        write_manifest(report, Path(config.cache.manifest))
    write_termination_message(termination_text(report))
    print(f"kubetune: initialized {len(report.sources)} source(s) in {report.seconds:.0f} s", flush=True)
    return contract.EXIT_SUCCESS
