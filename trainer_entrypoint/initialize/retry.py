"""Retries with exponential backoff, for the calls whose failures a later attempt may not see.

The clients retry some failures themselves (huggingface_hub: a file's HEAD on 429 and 5xx, its
GET on 429 honouring Retry-After, and a body cut off mid-way, resumed with a Range request;
botocore: throttling and 5xx). What they give up on, or never retry (the Hub's API calls, a 5xx
on a file's GET, a checksum that does not match), is retried here, a few times, with waits that
double; a Retry-After the server sent is honoured. Permanent errors are never retried.
"""

from __future__ import annotations

import random
import time
from typing import Callable, Optional, TypeVar

from ..errors import PermanentError

T = TypeVar("T")
ATTEMPTS = 4
FIRST_WAIT_SECONDS = 1.0
LONGEST_WAIT_SECONDS = 30.0


class IntegrityError(Exception):
    """A downloaded file is not the one its source lists (size or checksum)."""


def retrying(what: str, call: Callable[[], T], wait_for: Callable[[Exception], Optional[float]]) -> T:
    """call(), again while wait_for(error) says the error is transient (with the seconds the
    server asked to wait, or 0) and attempts are left."""
    wait = FIRST_WAIT_SECONDS
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return call()
        except PermanentError:
            raise
        except Exception as error:
            asked = wait_for(error)
            if asked is None or attempt == ATTEMPTS:
                raise
            delay = max(asked, wait * random.uniform(1.0, 1.25))  # jitter: initializers do not retry in step
            print(f"kubetune: {what}: {type(error).__name__}: {_short(error)}; retrying in {delay:.1f} s "
                  f"({attempt}/{ATTEMPTS - 1})", flush=True)
            time.sleep(delay)
            wait = min(wait * 2, LONGEST_WAIT_SECONDS)
    raise AssertionError("unreachable")


def _short(error: Exception) -> str:
    return " ".join(str(error).split())[:300]
