"""A real S3-compatible server on 127.0.0.1 for the tests: moto in server mode, in a process of
its own, spoken to over HTTP by boto3 exactly as a trainer pod speaks to an object store.

    server = S3Server.start(log_dir)
    upload_folder(server.url, folder, "bucket/prefix")
    server.stop()
"""

from __future__ import annotations

import atexit
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}
START_TIMEOUT = 60


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        # Straight to 127.0.0.1, whatever proxy the environment names.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"{url}/moto-api/", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


@dataclass
class S3Server:
    url: str
    process: subprocess.Popen
    log: Path
    # What a process needs to reach the server with boto3: tests pass it to monkeypatch.setenv
    # or to a subprocess's env.
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def start(cls, log_dir: Path, attempts: int = 3) -> "S3Server":
        """Start `python -m moto.server` on a free port and wait until it answers HTTP."""
        log_dir.mkdir(parents=True, exist_ok=True)
        for _ in range(attempts):
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            log = log_dir / f"moto-{port}.log"
            with open(log, "w") as handle:
                process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                           stdout=handle, stderr=subprocess.STDOUT)
            deadline = time.monotonic() + START_TIMEOUT
            while process.poll() is None and time.monotonic() < deadline:
                if _answers(url):
                    atexit.register(_stop, process)  # should the caller never get to stop() it
                    return cls(url, process, log, {"AWS_ENDPOINT_URL": url, **CREDENTIALS})
                time.sleep(0.1)
            _stop(process)  # the port was taken meanwhile, or it never answered: try another port
        raise RuntimeError(f"moto server did not start; last log {log}:\n{log.read_text()[-3000:]}")

    def stop(self) -> None:
        _stop(self.process)

    def client(self):
        return client(self.url)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def client(url: str):
    import boto3

    return boto3.client("s3", endpoint_url=url, aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                        region_name=CREDENTIALS["AWS_DEFAULT_REGION"])


def _split(uri: str) -> tuple[str, str]:
    """(bucket, prefix) of `s3://bucket/prefix` or `bucket/prefix`."""
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    return bucket, prefix.strip("/")


def upload_folder(url: str, folder: Path, uri: str) -> list[str]:
    """Every file under folder as an object under s3://bucket/prefix (the bucket made if missing);
    the keys written."""
    bucket, prefix = _split(uri)
    s3 = client(url)
    if bucket not in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}:
        s3.create_bucket(Bucket=bucket)
    keys = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        key = "/".join(filter(None, [prefix, path.relative_to(folder).as_posix()]))
        s3.upload_file(str(path), bucket, key)
        keys.append(key)
    return keys


def list_prefix(url: str, uri: str) -> dict[str, int]:
    """{key: size} of every object under s3://bucket/prefix as a folder (not under prefix-v2)."""
    bucket, prefix = _split(uri)
    folder = f"{prefix}/" if prefix else ""
    pages = client(url).get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=folder)
    return {item["Key"]: item["Size"] for page in pages for item in page.get("Contents", [])}


def download_prefix(url: str, uri: str, folder: Path) -> list[Path]:
    """Every object under s3://bucket/prefix into folder, by its key below the prefix."""
    bucket, prefix = _split(uri)
    s3 = client(url)
    written = []
    for key in list_prefix(url, uri):
        target = folder / key[len(prefix):].lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        s3.download_file(bucket, key, str(target))
        written.append(target)
    return written
