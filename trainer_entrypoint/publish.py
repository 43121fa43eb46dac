"""`python -m trainer_entrypoint publish`: the publish Job's command. It uploads the model
folder, its card included, to each spec.output.publish target the verdict allows, and leaves
what it published (revision or ETag, URL) in its termination message. A failed upload exits
non-zero, so the Job retries it; the model stays in the volume either way. Each upload may run
again (a new pod after one was lost) and leaves the same end state: S3 keys and claim files are
overwritten with the same bytes, and the Hub client commits only files that changed, so the same
model gives no new commit and the same revision."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Callable, Optional

from kubetune import contract
from kubetune.contract.config import TrainerConfig
from kubetune.contract.failure import FailureReport
from kubetune.contract.publish import Published, PublishSummary, PublishTarget
from kubetune.contract.report import EvaluationReport

from .errors import write_termination_message


def files_of(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.is_file())


def to_s3(folder: Path, ref: str, target: PublishTarget) -> Published:
    """Every file under s3://bucket/prefix/ (credentials and endpoint from the AWS_* env)."""
    import boto3

    bucket, _, prefix = ref.partition("/")
    prefix = prefix.strip("/")
    client = boto3.client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL"))
    files = files_of(folder)
    for path in files:
        key = "/".join(filter(None, (prefix, path.relative_to(folder).as_posix())))
        client.upload_file(str(path), bucket, key)
    card_key = "/".join(filter(None, (prefix, "README.md")))
    etag = client.head_object(Bucket=bucket, Key=card_key)["ETag"].strip('"') if (folder / "README.md").exists() \
        else None
    return Published(target=f"s3://{ref}", revision=etag, url=f"s3://{bucket}/{prefix}", files=len(files))


def to_hub(folder: Path, ref: str, target: PublishTarget) -> Published:
    """A commit of the whole folder to the model repository (HF_TOKEN; HF_ENDPOINT for another hub)."""
    from huggingface_hub import HfApi

    api = HfApi(endpoint=os.environ.get("HF_ENDPOINT"), token=os.environ.get("HF_TOKEN"))
    api.create_repo(ref, private=target.private, exist_ok=True, repo_type="model")
    commit = api.upload_folder(folder_path=str(folder), repo_id=ref, repo_type="model",
                               commit_message="Upload the model trained by kubetune")
    return Published(target=f"hf://{ref}", revision=commit.oid, url=commit.commit_url, files=len(files_of(folder)))


def to_claim(folder: Path, ref: str, target: PublishTarget) -> Published:
    """A copy in the claim the publish Job mounts; the card's SHA-256 stands for the revision."""
    if not target.path:
        raise FileNotFoundError(f"no mount for {target.target} in this pod")
    destination = Path(target.path)
    shutil.copytree(folder, destination, dirs_exist_ok=True)
    card = destination / "README.md"
    revision = hashlib.sha256(card.read_bytes()).hexdigest()[:16] if card.exists() else None
    return Published(target=target.target, revision=revision, url=target.target, files=len(files_of(folder)))


PUBLISHERS: dict[str, Callable[[Path, str, PublishTarget], Published]] = {"s3": to_s3, "hf": to_hub,
                                                                          "pvc": to_claim}


def verdict_of(config: TrainerConfig) -> Optional[str]:
    """The verdict the evaluator wrote in its report; None when the job was not evaluated."""
    folder = Path(config.output.evaluation)
    try:
        return EvaluationReport.verdict_in(folder)
    except (OSError, ValueError) as error:
        raise PublishError(str(folder), error) from error


def publish(config: TrainerConfig) -> PublishSummary:
    folder = Path(config.output.model)
    verdict = verdict_of(config)
    summary = PublishSummary()
    for target in config.output.publish:
        if not target.applies(verdict):
            print(f"kubetune: not publishing to {target.target}: the verdict is {verdict}", flush=True)
            continue
        scheme, _, ref = target.target.partition("://")
        summary.published.append(_publish_one(folder, target, scheme, ref))
    return summary


def _publish_one(folder: Path, target: PublishTarget, scheme: str, ref: str) -> Published:
    try:
        published = PUBLISHERS[scheme](folder, ref, target)
    except Exception as error:
        raise PublishError(target.target, error) from error
    print(f"kubetune: published {published.files} files to {published.url} ({published.revision})", flush=True)
    return published


class PublishError(RuntimeError):
    def __init__(self, target: str, error: Exception):
        self.target = target
        super().__init__(f"{target}: {type(error).__name__}: {' '.join(str(error).split())[:500]}")


def main() -> int:
    from .config import load_config

    config = load_config()
    try:
        summary = publish(config)
    except PublishError as error:
        write_termination_message(FailureReport(reason="PublishFailed", message=str(error)).fitted())
        print(f"kubetune: publishing failed: {error}", flush=True)
        return 1
    write_termination_message(summary.encode())
    print(f"kubetune: published: {summary.encode()}", flush=True)
    return contract.EXIT_SUCCESS
