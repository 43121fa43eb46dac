"""Open a rendered source location: a hub repo id, the built-in tiny model, a folder in the pod,
or an object-store prefix fetched into the cache; and find the config's sources (its slots).

A remote scheme of the contract's table that is neither the hub nor built in is fetched into
a local folder by its entry in FETCHERS; models and datasets both read that folder. A job with
an initializer has its downloaded sources (the hub's, the object store's) in the cache volume
instead, and its pods read them there as paths (trainer_entrypoint.config).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

from kubetune.contract.config import TrainerConfig
from kubetune.contract.initialization import FetchedSource
from kubetune.contract.sources import PATH, SCHEMES, Location

from .errors import PermanentError


# Answers of the object store that no retry changes: a wrong bucket name or wrong credentials.
PERMANENT_S3_ERRORS = {"NoSuchBucket", "InvalidBucketName", "AccessDenied", "AllAccessDisabled",
                       "InvalidAccessKeyId", "SignatureDoesNotMatch"}


@dataclass(frozen=True)
class S3Object:
    key: str
    relative: str  # below the prefix; "" when the prefix names this object itself
    size: int
    etag: str  # without quotes: a single-part upload's MD5, or `<md5 of the parts' MD5s>-<parts>`


def s3_client():
    try:
        import boto3
    except ImportError:
        raise PermanentError("s3:// sources need boto3 in the trainer image") from None
    return boto3.client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL"))


@contextmanager
def s3_errors(uri: str) -> Iterator[None]:
    """A missing bucket or refused credentials is the job's configuration: fail once, naming the
    source, instead of crashing into restarts."""
    from botocore.exceptions import ClientError, NoCredentialsError

    try:
        yield
    except NoCredentialsError:
        raise PermanentError(f"{uri}: no S3 credentials (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY; "
                             f"spec.credentials.s3SecretName)") from None
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "")
        if code in PERMANENT_S3_ERRORS:
            raise PermanentError(f"{uri}: {code}: {error.response['Error'].get('Message', '')}") from None
        raise


def s3_objects(client, ref: str) -> list[S3Object]:
    """The objects of s3://bucket/prefix: the object the prefix names, or those under it as a folder."""
    bucket, _, prefix = ref.partition("/")
    prefix = prefix.rstrip("/")
    found = []
    with s3_errors(f"s3://{ref}"):
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                # Listing by prefix also returns siblings that merely start with it (models/tiny-v2
                # for models/tiny), which are not this source, and the empty "folder/" markers some
                # tools write, which are no file: both are skipped (they crashed the copy before).
                key = item["Key"]
                if key.endswith("/"):
                    continue
                if key == prefix or not prefix or key.startswith(prefix + "/"):
                    relative = key[len(prefix):].lstrip("/")
                    found.append(S3Object(key, relative, item["Size"], item.get("ETag", "").strip('"')))
    if not found:
        raise PermanentError(f"s3://{ref}: no objects under this prefix")
    return found


def download_s3(ref: str) -> Path:
    """Copy s3://bucket/prefix into the cache (credentials from the AWS_* env): the object the
    prefix names, or the objects under it as a folder."""
    bucket, _, prefix = ref.partition("/")
    target = Path(os.environ.get("HF_HOME", "/cache")) / "s3" / bucket / prefix.rstrip("/")
    client = s3_client()
    for item in s3_objects(client, ref):
        destination = target / item.relative if item.relative else target
        destination.parent.mkdir(parents=True, exist_ok=True)
        if not destination.exists() or destination.stat().st_size != item.size:
            with s3_errors(f"s3://{ref}"):
                client.download_file(bucket, item.key, str(destination))
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


@dataclass
class Slot:
    """A place in the trainer config that names a source: what it is, and the location there."""

    role: str  # model, tokenizer, dataset, reward model, evaluation dataset: for messages
    source: str  # as the spec names it
    owner: object  # the config part holding the location
    field: str  # its attribute naming the location
    repo_type: str  # how the hub reads it: model or dataset
    revision: Optional[str] = None  # the hub revision the spec asks for (None: the default branch)

    @property
    def location(self) -> Location:
        return getattr(self.owner, self.field)

    def move_to(self, location: Location) -> None:
        setattr(self.owner, self.field, location)

    def key(self) -> tuple:
        """What tells its source from another: the location and, on the hub, how and at which
        revision it is read (a model and a dataset may share a name, a model two revisions).
        Taken before move_to, which changes it."""
        hub = self.location.kind == "hf"
        return self.location.encode(), self.repo_type if hub else None, self.revision if hub else None


def fetched_key(fetched: FetchedSource) -> tuple:
    """The key (Slot.key) of the source an initializer fetched."""
    return fetched.location.encode(), fetched.repo_type, fetched.requested_revision


def source_slots(config: TrainerConfig) -> list[Slot]:
    """Every location of the config: the model and its tokenizer, the dataset, the reward models
    and the evaluation dataset."""
    model = config.model
    slots = [Slot("model", model.source, model, "location", "model", model.revision)]
    if model.tokenizer_location:
        slots.append(Slot("tokenizer", model.tokenizer or model.source, model, "tokenizer_location", "model"))
    slots.append(Slot("dataset", config.dataset.source, config.dataset, "location", "dataset"))
    slots += [Slot("reward model", reward.model or "", reward, "location", "model")
              for reward in config.rewards if reward.location]
    if config.evaluation.dataset:
        evaluation = config.evaluation.dataset
        slots.append(Slot("evaluation dataset", evaluation.source, evaluation, "location", "dataset"))
    return slots


def remote_slots(config: TrainerConfig) -> list[Slot]:
    """The config's locations that the initializer downloads (hf://, s3://: the contract's table)."""
    return [slot for slot in source_slots(config)
            if getattr(SCHEMES.get(slot.location.kind), "downloaded", False)]
