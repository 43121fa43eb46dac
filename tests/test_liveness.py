"""/healthz, served by kopf, says whether the reconcile machinery is alive: it fails when the
resync stops completing rounds or an informer stops, and passes otherwise."""

import json
import urllib.error
import urllib.request

import pytest

from kubetune.handlers.registry import STALE_ROUNDS, Controller
from operator_harness import Harness, eventually
from test_operator import free_port

pytestmark = pytest.mark.timeout(120)

INTERVAL = 0.3


def health(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, ""
    except OSError:
        return 0, ""


def operator_with_liveness(harness: Harness) -> int:
    port = free_port()
    harness.start_operator(interval=INTERVAL, liveness_endpoint=f"http://127.0.0.1:{port}/healthz", watch_seconds=5)
    status, body = eventually(lambda: (answer := health(port))[0] == 200 and answer, timeout=30, what="/healthz 200")
    assert json.loads(body) == {"reconcile": "ok"}
    return port


def test_liveness_fails_when_resync_rounds_stop_completing():
    with Harness() as harness:
        port = operator_with_liveness(harness)

        def broken_resync():
            raise RuntimeError("a bug in the resync")

        harness.controller.resync = broken_resync  # every round from now on fails
        # kopf keeps a passing probe's answer for 10 s; the bound itself is STALE_ROUNDS intervals.
        eventually(lambda: health(port)[0] == 500, timeout=10 + STALE_ROUNDS * INTERVAL + 15,
                   what="/healthz failing")
        assert any("no resync round" in problem for problem in harness.controller.liveness_problems())


def test_liveness_fails_when_an_informer_stops():
    with Harness() as harness:
        port = operator_with_liveness(harness)
        stopped = harness.controller.informers[0]
        stopped.stop()
        stopped.join(15)
        eventually(lambda: health(port)[0] == 500, timeout=30, what="/healthz failing")
        assert harness.controller.liveness_problems() == [f"the {stopped.name} thread is not running"]


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class Informing:
    """An informer as liveness sees it."""

    def __init__(self, problem=None):
        self._problem = problem

    def problem(self):
        return self._problem


def controller(clock, interval=10.0) -> Controller:
    from kubetune.handlers.reconcile import OperatorContext

    return Controller(OperatorContext(cluster=None), interval=interval, clock=clock)


def test_a_replica_waiting_for_the_lease_is_alive_however_long_it_waits():
    clock = Clock()
    waiting = controller(clock)
    clock.now += 1e6
    assert waiting.liveness_problems() == []


def test_a_leader_is_alive_until_no_round_has_completed_for_stale_rounds_intervals():
    clock = Clock()
    leader = controller(clock, interval=10.0)
    leader.leading.set()
    leader.informers = [Informing(), Informing()]
    clock.now += STALE_ROUNDS * 10.0
    assert leader.liveness_problems() == []
    clock.now += 1.0
    assert leader.liveness_problems() == [f"no resync round has completed for {STALE_ROUNDS * 10 + 1} s "
                                          "(the interval is 10 s)"]
    leader.round_done = clock.now
    leader.informers.append(Informing("informer-Pod-ml has not listed or watched for 400 s"))
    assert leader.liveness_problems() == ["informer-Pod-ml has not listed or watched for 400 s"]
