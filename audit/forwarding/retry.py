"""How hard a forwarder tries: retries within one run (exponential backoff with jitter,
bounded by the run's time budget), the outbox's slower schedule, and the pause after a
batch had to go to the outbox.

A run is short on purpose: beat starts one every few seconds, and a worker busy waiting
on a dead SIEM would hold up every other job (in embedded mode there is one worker).
"""

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True)
class Policy:
    attempts: int = 4  # tries of one batch within a run
    base: float = 0.5  # first retry after about this many seconds, then doubling
    cap: float = 4.0  # longest wait between two tries within a run
    budget: float = 10.0  # seconds one forwarder's run may spend
    least: float = 1.0  # an attempt is not started with less time than this left
    timeout: float = 5.0  # longest one attempt may take (connect, send, answer)
    batch: int = 500  # records per batch
    outbox_base: float = 30.0  # an outbox wait after 1 failed attempt, doubling per attempt
    outbox_cap: float = 3600.0
    pause_base: float = 5.0  # after a batch went to the outbox, new records wait this long
    pause_cap: float = 300.0
    lease: float = 120.0  # a run's claim on its forwarder; longer than any run can last

    def backoff(self, retry: int) -> float:
        """The wait before retry number `retry` (1, 2, ...) within a run: full jitter."""
        return random.uniform(0, min(self.cap, self.base * 2 ** (retry - 1)))

    def outbox_delay(self, attempts: int) -> timedelta:
        """When an outbox entry that failed `attempts` times is tried again: the doubling
        delay with "equal jitter" (between half of it and all of it), so entries that
        failed together do not all come back at the same moment."""
        full = min(self.outbox_cap, self.outbox_base * 2 ** max(attempts - 1, 0))
        return timedelta(seconds=full / 2 + random.uniform(0, full / 2))

    def pause(self, consecutive_failures: int) -> timedelta:
        full = min(self.pause_cap, self.pause_base * 2 ** max(consecutive_failures - 1, 0))
        return timedelta(seconds=full)


DEFAULT = Policy()


class Undelivered(Exception):
    """One attempt failed. The message says why, for an admin: no secret, no URL query."""

    def __init__(self, reason: str, *, retry: bool = True, retry_after: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.retry = retry
        self.retry_after = retry_after


class GaveUp(Exception):
    """Every attempt the policy and the time left allowed failed."""

    def __init__(self, last: Undelivered, failures: int) -> None:
        super().__init__(last.reason)
        self.reason = last.reason
        self.failures = failures
        self.retry_after = last.retry_after


def deliver(
    send: Callable[[float], None], policy: Policy, deadline: float, *, attempts: int | None = None
) -> int:
    """Call `send(attempt_deadline)` until it does not raise Undelivered, waiting between
    tries; returns how many tries failed first. Raises GaveUp when out of tries or of time.
    Each try ends by `policy.timeout` or `deadline`, whichever is first. A Retry-After the
    receiver gave is waited for when the time left allows it."""
    failures = 0
    tries = policy.attempts if attempts is None else attempts
    while True:
        try:
            send(min(deadline, time.monotonic() + policy.timeout))
            return failures
        except Undelivered as failed:
            failures += 1
            if not failed.retry or failures >= tries:
                raise GaveUp(failed, failures) from None
            wait = failed.retry_after
            if wait is None:
                wait = policy.backoff(failures)
            if time.monotonic() + wait + policy.least > deadline:
                raise GaveUp(failed, failures) from None
            time.sleep(wait)
