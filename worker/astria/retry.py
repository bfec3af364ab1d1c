"""Retry policies, decided by tenacity and applied without sleeping: a decision is a due time.

Tenacity's `Retrying` holds each policy: what is retried, when to stop, how long to wait. The
queue never runs tenacity's loop (it would sleep in a worker slot); `next_attempt_in` asks the
policy about one failed attempt, whose number and start time the caller keeps in Redis, and the
caller then makes the job (or webhook) due again after that long.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from tenacity import Future as AttemptFuture
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

from worker.astria.client import TransientError
from worker.settings import Settings

#: Astria's advice for a 500: back off, starting at 30 s. Followed as it is: nothing here has
#: measured Astria's 500s (the simulator's are ours), and a 500 on a POST goes to the listing
#: rather than to a retry anyway; it only spaces out polls and listings.
AFTER_500_SECONDS = 30.0


def advised_wait(exc: BaseException) -> float:
    """What Astria asked for after this failure: its Retry-After, 30 s after a 500, else 0."""
    if not isinstance(exc, TransientError):
        return 0.0
    if exc.retry_after is not None:
        return exc.retry_after
    return AFTER_500_SECONDS if exc.status == 500 else 0.0


def throttled_wait(settings: Settings, exc: BaseException) -> float:
    """When a job's request answered 429 goes again: when Astria's Retry-After says (at most
    ASTRIA_RETRY_MAX_SECONDS), else at once. A 429 is the account's limit, not the job's fault:
    it spends none of the job's retry budget (in a backlog, the wait for the job's turn would
    spend its seconds, and a busy account would fail jobs, or leave a cancelled job's prompt
    undeleted), the limiter paces the account, and the job's own `expires_in` bounds the wait (a
    cancelled job's DELETE, ASTRIA_DELETE_FOR_SECONDS: `worker.flow.wait.delete`)."""
    return min(advised_wait(exc), settings.astria_retry_max_seconds)


@dataclass(frozen=True)
class NextTry:
    """When a job's step goes again after its request failed for now."""

    at: float
    spent: bool  #: whether it spends an attempt of the job's retry budget (a 429 does not)


def next_try(settings: Settings, policy: Retrying, exc: TransientError, *, attempt: int,
             started_at: float, now: float) -> NextTry | None:
    """A 429 when `throttled_wait` says; anything else as `policy` says, one attempt further
    than `attempt` (started at `started_at`, or now); None when the budget is spent."""
    if exc.status == 429:
        return NextTry(now + throttled_wait(settings, exc), spent=False)
    delay = next_attempt_in(policy, attempt=attempt + 1, started_at=started_at or now, error=exc)
    return None if delay is None else NextTry(now + delay, spent=True)


def _astria_wait(settings: Settings) -> Callable[[RetryCallState], float]:
    """What Astria asked for (`advised_wait`; at most ASTRIA_RETRY_MAX_SECONDS) when it asked,
    else exponential back-off with full jitter."""
    backoff = wait_random_exponential(multiplier=settings.astria_retry_initial_delay,
                                      max=settings.astria_retry_max_delay)

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        advised = advised_wait(exc) if exc else 0.0
        if advised:
            return min(advised, settings.astria_retry_max_seconds)
        return float(backoff(state))

    return wait


def astria_policy(settings: Settings) -> Retrying:
    """Astria requests: TransientError only (429, 5xx, network), at most ASTRIA_RETRY_ATTEMPTS
    attempts within ASTRIA_RETRY_MAX_SECONDS; wait Astria's Retry-After when it sends one, else
    exponential back-off with full jitter (ASTRIA_RETRY_INITIAL_DELAY .. ASTRIA_RETRY_MAX_DELAY)."""
    return Retrying(
        retry=retry_if_exception_type(TransientError),
        stop=stop_after_attempt(settings.astria_retry_attempts)
        | stop_after_delay(settings.astria_retry_max_seconds),
        wait=_astria_wait(settings),
    )


def listing_policy(settings: Settings) -> Retrying:
    """Looking for the prompt of an unanswered POST: given up only after twice
    ASTRIA_RETRY_ATTEMPTS failed listings in a row, however long they took (a job that gives up
    there may have paid for a prompt it cannot name)."""
    return Retrying(retry=retry_if_exception_type(TransientError),
                    stop=stop_after_attempt(2 * settings.astria_retry_attempts),
                    wait=_astria_wait(settings))


def webhook_policy(settings: Settings) -> Retrying:
    """Webhooks to producers: any failed delivery, for WEBHOOK_RETRY_FOR_SECONDS; the first
    retry within WEBHOOK_FIRST_RETRY_SECONDS, then exponential back-off with full jitter up to
    WEBHOOK_MAX_RETRY_INTERVAL."""
    return Retrying(
        retry=retry_if_exception_type(Exception),
        stop=stop_after_delay(settings.webhook_retry_for_seconds),
        wait=wait_random_exponential(multiplier=settings.webhook_first_retry_seconds,
                                     max=settings.webhook_max_retry_interval),
    )


def next_attempt_in(policy: Retrying, *, attempt: int, started_at: float, error: BaseException,
                    now: float | None = None) -> float | None:
    """Seconds until attempt `attempt + 1`, or None when the policy gives up after `error`.

    `attempt` counts from 1; `started_at` is when attempt 1 was made (wall clock)."""
    state = RetryCallState(policy, fn=None, args=(), kwargs={})
    state.attempt_number = attempt
    state.start_time = started_at
    outcome = AttemptFuture(attempt)
    outcome.set_exception(error)
    state.outcome, state.outcome_timestamp = outcome, time.time() if now is None else now
    if not policy.retry(state) or policy.stop(state):
        return None
    return float(policy.wait(state))
