"""Publishing the trained model: the table of target schemes, the targets as the publish Job
reads them, and what it leaves in its termination message for status.output.published."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from pydantic import ConfigDict, Field

from .document import Document


@dataclass(frozen=True)
class PublishScheme:
    name: str
    pattern: str  # the whole target, scheme included
    description: str
    mounts_claim: bool = False  # the publish Job mounts the claim and copies into it


def claim_of(target: str) -> Optional[tuple[str, str]]:
    """(claim, path inside it) of a target on a claim; None for any other."""
    scheme, _, ref = target.partition("://")
    if not PUBLISH_SCHEMES[scheme].mounts_claim:
        return None
    claim, _, path = ref.partition("/")
    return claim, path.strip("/")


PUBLISH_SCHEMES: dict[str, PublishScheme] = {s.name: s for s in (
    PublishScheme("hf", r"hf://[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9._-]+",
                  "hf://<org>/<name> (a Hugging Face Hub model repository, with credentials.hfToken)"),
    PublishScheme("s3", r"s3://[a-z0-9][a-z0-9.-]*[a-z0-9](/[^\s]*)?",
                  "s3://<bucket>/<prefix> (with credentials.s3SecretName)"),
    PublishScheme("pvc", r"pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?(/[^\s]*)?",
                  "pvc://<claim>/<path> (a PersistentVolumeClaim the publish Job mounts)", mounts_claim=True),
)}
PUBLISH_PATTERN = "^(" + "|".join(s.pattern for s in PUBLISH_SCHEMES.values()) + ")$"

When = Literal["gatesPassed", "always"]


class PublishSettings(Document):
    target: str = Field(pattern=PUBLISH_PATTERN, max_length=512,
                        description="One of " + ", ".join(s.description for s in PUBLISH_SCHEMES.values()) + ".")
    when: When = Field("gatesPassed", description="gatesPassed: only a model whose gates passed (a job without "
                                                    "gates counts as passed); always: whatever the verdict.")
    private: bool = Field(True, description="Create a hf:// repository as private.")

    def applies(self, verdict: Optional[str]) -> bool:
        """gatesPassed publishes a model whose gates passed, or that has none to pass."""
        return self.when == "always" or verdict in ("Passed", "NoGates", None)


class PublishTarget(PublishSettings):
    path: Optional[str] = None  # where a target on a claim is, inside the publish pod


class Published(Document):
    model_config = ConfigDict(extra="ignore")

    target: str = Field(description="Where the model went.")
    revision: Optional[str] = Field(None, description="The commit (hf://) or the card's ETag (s3://).")
    url: str = Field(description="Where to find it.")
    files: int = Field(0, description="Files uploaded.")


class PublishSummary(Document):
    model_config = ConfigDict(extra="ignore")

    published: list[Published] = Field(default_factory=list)

