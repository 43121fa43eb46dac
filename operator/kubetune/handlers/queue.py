"""Which jobs to reconcile next, and the bounded pool of threads that does it.

The semantics of client-go's work queue: a key waits in the queue once however often it is
added; one thread at a time works on a key, and a key added while it is being worked on runs
again afterwards, so two reconciles of one job never overlap and none is lost. A key whose
reconcile failed comes back after a backoff that grows with each failure in a row.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections import deque
from typing import Callable, Hashable, Optional

from .cluster import describe

log = logging.getLogger("kubetune.queue")


class WorkQueue:
    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._ready: deque[Hashable] = deque()
        self._queued: set[Hashable] = set()
        self._working: set[Hashable] = set()
        self._again: set[Hashable] = set()  # added while being worked on
        self._later: list[tuple[float, int, Hashable]] = []  # (due, tiebreak, key)
        self._count = 0
        self._failures: dict[Hashable, int] = {}
        self._changed = threading.Condition()
        self.closed = False

    def add(self, key: Hashable, delay: float = 0.0) -> None:
        with self._changed:
            if delay > 0:
                self._count += 1
                heapq.heappush(self._later, (self._clock() + delay, self._count, key))
            else:
                self._add_now(key)
            self._changed.notify()

    def _add_now(self, key: Hashable) -> None:
        if key in self._working:
            self._again.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            self._ready.append(key)

    def get(self) -> Optional[Hashable]:
        """The next key to work on, waiting for one; None once the queue is closed."""
        with self._changed:
            while not self.closed:
                now = self._clock()
                while self._later and self._later[0][0] <= now:
                    self._add_now(heapq.heappop(self._later)[2])
                if self._ready:
                    key = self._ready.popleft()
                    self._queued.discard(key)
                    self._working.add(key)
                    return key
                self._changed.wait(self._later[0][0] - now if self._later else None)
            return None

    def done(self, key: Hashable, failed: bool = False) -> float:
        """The work on a key ended; a failed one comes back after a backoff (returned, seconds)."""
        with self._changed:
            self._working.discard(key)
            delay = 0.0
            if failed:
                failures = self._failures[key] = self._failures.get(key, 0) + 1
                delay = min(0.5 * 2 ** (failures - 1), 60.0)
                self._count += 1
                heapq.heappush(self._later, (self._clock() + delay, self._count, key))
            else:
                self._failures.pop(key, None)
            if key in self._again:
                self._again.discard(key)
                if not failed:
                    self._add_now(key)
            self._changed.notify()
            return delay

    def forget(self, key: Hashable) -> None:
        with self._changed:
            self._failures.pop(key, None)

    def backing_off(self) -> int:
        with self._changed:
            return len(self._failures)

    def overdue(self) -> int:
        """Keys due now and not yet taken by a worker."""
        with self._changed:
            now = self._clock()
            return len(self._ready) + sum(1 for due, _, _ in self._later if due <= now)

    def depth(self) -> int:
        with self._changed:
            return len(self._ready)

    def close(self) -> None:
        with self._changed:
            self.closed = True
            self._changed.notify_all()


def start_workers(queue: WorkQueue, work: Callable[[Hashable], None], count: int) -> list[threading.Thread]:
    """`count` threads that take keys from the queue and work on them until it closes."""

    def loop() -> None:
        while (key := queue.get()) is not None:
            try:
                work(key)
            except Exception as error:  # one line per failure; the key comes back later
                delay = queue.done(key, failed=True)
                log.warning(f"reconcile of {'/'.join(map(str, key))}: {describe(error)}; again in {delay:.1f} s")
            else:
                queue.done(key)

    threads = [threading.Thread(target=loop, daemon=True, name=f"reconcile-{index}") for index in range(count)]
    for thread in threads:
        thread.start()
    return threads
