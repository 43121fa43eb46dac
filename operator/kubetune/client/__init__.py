"""kubetune.Client: create, watch and read FineTuneJobs from Python, on a cluster
(`Client()`) or on this machine (`Client.local()`), with typed answers and typed errors."""

from . import errors
from .client import Client
from .errors import ApiError, ConfigError, InvalidJob, JobFailed, JobNotFound, KubetuneError, RunStopped, WaitTimeout
from .job import Checkpoints, Event, Job, PodState
from ..lifecycle.phases import Phase

__all__ = ["ApiError", "Checkpoints", "Client", "ConfigError", "Event", "InvalidJob", "Job", "JobFailed",
           "JobNotFound", "KubetuneError", "Phase", "PodState", "RunStopped", "WaitTimeout", "errors"]
