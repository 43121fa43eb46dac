"""Open a rendered source location: a hub repo id, the built-in tiny model, a folder in the pod,
or an object-store prefix fetched into the cache.

A remote scheme of the contract's table that is neither the hub nor built in is fetched into
a local folder by its entry in FETCHERS; models and datasets both read that folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from kubetune.contract.sources import PATH, Location

from .errors import PermanentError


# Answers of the object store that no retry changes: a wrong bucket name or wrong credentials.
PERMANENT_S3_ERRORS = {"NoSuchBucket", "InvalidBucketName", "AccessDenied", "AllAccessDisabled",
                       "InvalidAccessKeyId", "SignatureDoesNotMatch"}


def download_s3(ref: str) -> Path:
    """Copy s3://bucket/prefix into the cache (credentials from the AWS_* env): the object the
    prefix names, or the objects under it as a folder."""
    uri = f"s3://{ref}"
    try:
        import boto3
        from botocore.exceptions import ClientError, NoCredentialsError
    except ImportError:
        raise PermanentError(f"{uri}: s3:// sources need boto3 in the trainer image") from None
    bucket, _, prefix = ref.partition("/")
    prefix = prefix.rstrip("/")
    target = Path(os.environ.get("HF_HOME", "/cache")) / "s3" / bucket / prefix
    client = boto3.client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL"))
    found = False
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                # Listing by prefix also returns siblings that merely start with it (models/tiny-v2
                # for models/tiny), which are not this source, and the empty "folder/" markers some
                # tools write, which are no file: both are skipped (they crashed the copy before).
                key = item["Key"]
                if key.endswith("/"):
                    continue
                if key == prefix:
                    destination = target
                elif not prefix or key.startswith(prefix + "/"):
                    destination = target / key[len(prefix):].lstrip("/")
                else:
                    continue
                found = True
                destination.parent.mkdir(parents=True, exist_ok=True)
                if not destination.exists() or destination.stat().st_size != item["Size"]:
                    client.download_file(bucket, key, str(destination))
    # A missing bucket or refused credentials is the job's configuration: fail once, naming the
    # source, instead of crashing into restarts.
    except NoCredentialsError:
        raise PermanentError(f"{uri}: no S3 credentials (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY; "
                             f"spec.credentials.s3SecretName)") from None
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "")
        if code in PERMANENT_S3_ERRORS:
            raise PermanentError(f"{uri}: {code}: {error.response['Error'].get('Message', '')}") from None
        raise
    if not found:
        raise PermanentError(f"{uri}: no objects under this prefix")
    return target


# Remote schemes whose sources are fetched into a local folder, by location kind.
FETCHERS: dict[str, Callable[[str], Path]] = {"s3": download_s3}


def fetch(location: Location, source: str) -> Path:
    """A local folder holding a remote source."""
    fetcher = FETCHERS.get(location.kind)
    if fetcher is None:
        raise PermanentError(f"{source}: this trainer image cannot read {location.kind}:// sources")
    return fetcher(location.ref)


def model_reference(location: Location, source: str) -> str:
    """A local folder or a hub repo id for from_pretrained."""
    if location.kind == "builtin":
        from .builtin import tiny_model_dir

        return str(tiny_model_dir())
    if location.kind == "hf":
        return location.ref
    if location.kind == PATH:
        return _existing_folder(location.ref, source, "model")
    return str(fetch(location, source))


def _existing_folder(path: str, source: str, what: str) -> str:
    if not Path(path).exists():
        upstream = " (has that job succeeded?)" if source.startswith("job://") else ""
        raise PermanentError(f"{what} {source}: {path} does not exist{upstream}")
    return path
