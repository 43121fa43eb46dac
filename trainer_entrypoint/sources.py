"""Turn a rendered source location into something transformers and datasets can open."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .errors import PermanentError


def model_reference(location: dict[str, Any], source: str) -> str:
    """A local folder or a hub repo id for from_pretrained."""
    kind = location["kind"]
    if kind == "builtin":
        from .builtin import tiny_model_dir

        return str(tiny_model_dir())
    if kind == "hf":
        return location["repo"]
    if kind == "path":
        return _existing_folder(location["path"], source, "model")
    if kind == "s3":
        return download_s3(location["uri"])
    raise PermanentError(f"{source}: unsupported source kind {kind!r}")


def _existing_folder(path: str, source: str, what: str) -> str:
    if not Path(path).exists():
        upstream = " (has that job succeeded?)" if source.startswith("job://") else ""
        raise PermanentError(f"{what} {source}: {path} does not exist{upstream}")
    return path


def download_s3(uri: str) -> str:
    """Copy s3://bucket/prefix into the cache (credentials from the AWS_* env)."""
    try:
        import boto3
    except ImportError:
        raise PermanentError(f"{uri}: s3:// sources need boto3 in the trainer image") from None
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    target = Path(os.environ.get("HF_HOME", "/cache")) / "s3" / bucket / prefix
    client = boto3.client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL"))
    found = False
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            found = True
            destination = target / Path(item["Key"]).relative_to(prefix) if prefix else target / item["Key"]
            destination.parent.mkdir(parents=True, exist_ok=True)
            if not destination.exists() or destination.stat().st_size != item["Size"]:
                client.download_file(bucket, item["Key"], str(destination))
    if not found:
        raise PermanentError(f"{uri}: no objects under this prefix")
    return str(target)
