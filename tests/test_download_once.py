"""Download once: the quickstart, its model and data from hf:// on a local Hub-compatible server
(the real huggingface_hub client, HF_ENDPOINT), run with `kubetune run` on 2 nodes. Each file is
downloaded once for the whole job (workers and the evaluation of the base model included), a
second job of the same sources downloads nothing, and a killed worker resumes without a
download."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from kubetune.contract.initialization import InitializationReport
from test_initializer import hub, repos  # noqa: F401 - the test Hub and its two repositories

RUN_TIMEOUT = 420


def quickstart_from_hub(folder: Path, name: str, **training) -> Path:
    document = yaml.safe_load((REPO / "examples" / "quickstart.yaml").read_text())
    document["metadata"] = {"name": name, "namespace": "ml"}
    spec = document["spec"]
    spec["model"] = {"source": "hf://org/tiny"}
    spec["dataset"] = {"source": "hf://org/chat", "split": "train", "evalSplit": "test"}
    spec["training"].update({"max_steps": 6, "logging_steps": 2, **training})
    spec["checkpointing"] = {"everySteps": 2, "keep": 2}
    spec["evaluation"]["metrics"] = ["loss"]
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def run(job: Path, run_dir: Path, cache: Path, hub_url: str, **popen) -> subprocess.Popen:
    env = {**os.environ, "HF_ENDPOINT": hub_url}
    env.pop("HF_HUB_OFFLINE", None)  # the initializer goes online; the pods then read offline
    return subprocess.Popen([str(Path(sys.executable).parent / "kubetune"), "run", str(job), "--run-dir",
                             str(run_dir), "--cache-dir", str(cache)], cwd=job.parent, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True, **popen)


def finished(process: subprocess.Popen, run_dir: Path) -> str:
    output, _ = process.communicate(timeout=RUN_TIMEOUT)
    logs = "\n".join(p.read_text()[-2000:] for p in sorted((run_dir / "pods").glob("*/log.txt")))
    assert process.returncode == 0, output[-3000:] + logs
    return output


def file_downloads(hub) -> dict:
    return {key: count for key, count in hub.downloads.items() if count}


@pytest.mark.timeout(900)
def test_each_file_is_downloaded_once_per_cache_and_a_resumed_worker_downloads_nothing(hub, repos, tmp_path):  # noqa: F811
    cache = tmp_path / "model-cache"
    first = finished(run(quickstart_from_hub(tmp_path, "first"), tmp_path / "first", cache, hub.url),
                     tmp_path / "first")
    assert "FineTuneJob Succeeded" in first
    downloaded = file_downloads(hub)
    served = {("org/tiny", p.relative_to(repos["model"]).as_posix()) for p in repos["model"].rglob("*") if p.is_file()}
    served |= {("org/chat", p.relative_to(repos["chat"]).as_posix()) for p in repos["chat"].rglob("*") if p.is_file()}
    assert set(downloaded) == served and set(downloaded.values()) == {1}, downloaded
    report = InitializationReport.decode(next(cache.glob("jobs/**/first-*/sources.json")).read_text())
    assert {s.source for s in report.sources if not s.cached} == {"hf://org/tiny", "hf://org/chat"}

    # A second job of the same model and data: nothing is downloaded.
    second = finished(run(quickstart_from_hub(tmp_path, "second"), tmp_path / "second", cache, hub.url),
                      tmp_path / "second")
    assert "FineTuneJob Succeeded" in second
    assert file_downloads(hub) == downloaded
    init_log = next((tmp_path / "second" / "pods").glob("*init*/log.txt")).read_text()
    assert "hf://org/tiny@" in init_log and "cached" in init_log

    # A run stopped mid-training (as Ctrl-C does) and run again resumes from its checkpoint
    # without any download.
    job = quickstart_from_hub(tmp_path, "resumed", max_steps=400)
    process = run(job, tmp_path / "resumed", cache, hub.url)
    checkpoints = tmp_path / "resumed" / "output"
    _wait_for(lambda: any(checkpoints.glob("**/checkpoint-*/trainer_state.json")), process)
    os.killpg(process.pid, signal.SIGINT)
    process.communicate(timeout=60)
    job.write_text(job.read_text().replace("max_steps: 400", "max_steps: 8"))
    resumed = finished(run(job, tmp_path / "resumed", cache, hub.url), tmp_path / "resumed")
    assert "FineTuneJob Succeeded" in resumed
    assert file_downloads(hub) == downloaded


def _wait_for(condition, process: subprocess.Popen, seconds: float = 300) -> None:
    import time

    deadline = time.monotonic() + seconds
    while not condition():
        assert process.poll() is None, process.communicate()[0][-3000:]
        assert time.monotonic() < deadline, "not reached in time"
        time.sleep(1)
