"""The phases of a FineTuneJob (status.phase), as named constants.

The names are defined once, by the status model (api.models.PHASES, from which the CRD is
generated); this enum only gives each one a constant:

  Pending       the workers are not running yet (or wait for an upstream job://)
  Initializing  some workers run, not all
  Training      every worker runs (an elastic job: at least minNodes); the stall watchdog watches
  Suspended     spec.runPolicy.suspend: the workers are scaled to zero
  Evaluating    trained; the evaluation Job measures the model
  Publishing    evaluated; the publish Job uploads the model to spec.output.publish
  Succeeded     done, with the model (and its verdict) usable
  Failed        done, with status.failure saying why
"""

from __future__ import annotations

from enum import StrEnum

from ..api.models import PHASES, TERMINAL_PHASES

Phase = StrEnum("Phase", [(name.upper(), name) for name in PHASES])

TERMINAL = frozenset(Phase(name) for name in TERMINAL_PHASES)
