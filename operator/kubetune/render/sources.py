"""Where each model and dataset source is found inside a pod, and which volumes that needs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional

from .. import contract
from ..api.models import FineTuneJob, OutputStatus
from ..contract.sources import PATH, Location, split_source
from .naming import output_claim_name


@dataclass(frozen=True)
class OutputLocation:
    """A job's output folder: a claim and the folder inside it."""

    claim_name: str
    sub_path: str

    @property
    def model_path(self) -> str:
        return f"{self.sub_path}/{contract.MODEL_SUBDIR}".lstrip("/")

    def to_status(self) -> OutputStatus:
        """status.output of the job: where its trained model is."""
        return OutputStatus(claim_name=self.claim_name, path=self.model_path)

    @classmethod
    def from_status(cls, output: OutputStatus) -> "OutputLocation":
        return cls(output.claim_name, output.path.removesuffix(contract.MODEL_SUBDIR).rstrip("/"))


def output_location(job: FineTuneJob) -> OutputLocation:
    output = job.spec.output
    if output.claim_name:
        return OutputLocation(output.claim_name, output.sub_path or job.metadata.name)
    return OutputLocation(output_claim_name(job.metadata.name), output.sub_path or "")


@dataclass(frozen=True)
class InputVolume:
    claim_name: str

    @property
    def volume_name(self) -> str:
        return f"input-{self.claim_name}"[:63].rstrip("-")

    @property
    def mount_path(self) -> str:
        return f"{contract.INPUTS_DIR}/{self.claim_name}"


@dataclass(frozen=True)
class ResolvedSource:
    source: str
    location: Location  # what the pod reads
    volume: Optional[InputVolume] = None


def resolve_source(source: str, upstream_outputs: Mapping[str, OutputLocation]) -> ResolvedSource:
    """`upstream_outputs` maps job:// names to their outputs; by default a job's own claim.

    A claim is mounted and read as a path; any other scheme the pod opens itself."""
    scheme, rest = split_source(source)
    if scheme == "pvc":
        claim, _, path = rest.partition("/")
        return _on_claim(source, claim, path)
    if scheme == "job":
        upstream = upstream_outputs.get(rest) or OutputLocation(output_claim_name(rest), "")
        return _on_claim(source, upstream.claim_name, upstream.model_path, job=rest)
    return ResolvedSource(source, Location(kind=scheme, ref=rest))


def _on_claim(source: str, claim: str, path: str, job: Optional[str] = None) -> ResolvedSource:
    volume = InputVolume(claim)
    return ResolvedSource(source, Location(kind=PATH, ref=f"{volume.mount_path}/{path}".rstrip("/"), job=job), volume)


def job_sources(job: FineTuneJob) -> dict[str, str]:
    """Every source the job reads, by the spec field that names it."""
    spec = job.spec
    sources = {"spec.model.source": spec.model.source, "spec.dataset.source": spec.dataset.source}
    if spec.model.tokenizer:
        sources["spec.model.tokenizer"] = spec.model.tokenizer
    if spec.evaluation.dataset:
        sources["spec.evaluation.dataset.source"] = spec.evaluation.dataset.source
    for index, reward in enumerate(spec.rewards or []):
        if reward.model:
            sources[f"spec.rewards[{index}].model"] = reward.model
    return sources


def upstream_jobs(job: FineTuneJob) -> list[str]:
    """FineTuneJobs this job reads from (job:// sources), which must succeed first."""
    names = [rest for scheme, rest in map(split_source, job_sources(job).values()) if scheme == "job"]
    return sorted(set(names))
