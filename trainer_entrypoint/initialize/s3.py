"""s3:// sources with boto3 (credentials and AWS_ENDPOINT_URL from the env).

The listing is the revision: a digest of its keys, ETags and sizes, so a changed object makes a
new entry. Each object is checked after download: its size, and its MD5 where the ETag is one (a
single-part upload's); a multipart upload's ETag (with a '-') is no MD5 of the object, so only
its size is checked.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Optional

from ..sources import s3_client, s3_errors, s3_objects
from .remote import RemoteFile
from .retry import IntegrityError

# Answers of the object store that a later attempt may not see.
TRANSIENT_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "InternalError",
                   "ServiceUnavailable", "RequestTimeTooSkewed"}


class S3Source:
    def __init__(self, source: str, ref: str):
        self.source, self.ref = source, ref
        self.bucket, _, prefix = ref.partition("/")
        self.prefix = prefix.rstrip("/")
        self.client = s3_client()
        self.objects = []

    def resolve(self) -> str:
        self.objects = s3_objects(self.client, self.ref)
        listing = "".join(f"{o.relative}\0{o.etag}\0{o.size}\n" for o in sorted(self.objects, key=lambda o: o.key))
        return hashlib.sha256(listing.encode()).hexdigest()[:40]

    def files(self) -> list[RemoteFile]:
        return [RemoteFile(self._name(o.relative), o.size, md5=None if "-" in o.etag or not o.etag else o.etag)
                for o in self.objects]

    def download(self, file: RemoteFile, folder: Path) -> None:
        key = next(o.key for o in self.objects if self._name(o.relative) == file.path)
        destination = folder / file.path
        destination.parent.mkdir(parents=True, exist_ok=True)
        with s3_errors(self.source):
            self.client.download_file(self.bucket, key, str(destination))

    def target(self, folder: Path) -> Path:
        """A prefix that names one object is that file inside the entry."""
        single = len(self.objects) == 1 and not self.objects[0].relative
        return folder / self._name("") if single else folder

    def _name(self, relative: str) -> str:
        return relative or self.prefix.rsplit("/", 1)[-1] or self.bucket

    def wait_for(self, error: Exception) -> Optional[float]:
        from boto3.exceptions import RetriesExceededError
        from botocore.exceptions import ClientError, ConnectionError, HTTPClientError, IncompleteReadError

        if isinstance(error, ClientError):
            status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            code = error.response.get("Error", {}).get("Code", "")
            return 0.0 if code in TRANSIENT_CODES or status >= 500 else None
        transient = (ConnectionError, HTTPClientError, IncompleteReadError, RetriesExceededError, IntegrityError)
        return 0.0 if isinstance(error, transient) else None
