"""When to look at a prompt again: near its expected finish, then backing off.

The first poll comes when the prompt should be done, from a moving average of Astria's own
`created_at -> trained_at` times (in Redis: it survives restarts); then every
ASTRIA_POLL_INTERVAL x ASTRIA_POLL_BACKOFF^n, capped at ASTRIA_POLL_MAX_INTERVAL. With callbacks
on, polling is only the fallback for a callback that never came (Astria does not retry them).

Before any generation has finished (a cold start), nobody knows when to look: interactive jobs
look after ASTRIA_COLD_POLL_SECONDS, then that x ASTRIA_POLL_BACKOFF^n up to ASTRIA_POLL_INTERVAL
(cheap: the polls of one tune are answered by one listing) until a generation time is learnt,
then at their expected finish; the other lanes first after ASTRIA_FIRST_POLL_SECONDS.
"""

from __future__ import annotations

from worker.records import Lane
from worker.settings import Settings


def cold(settings: Settings, lane: Lane, expected_generation: float | None) -> bool:
    """Whether a job of `lane` looks early and often: interactive, polling, nothing learnt."""
    return (lane is Lane.INTERACTIVE and expected_generation is None
            and not settings.astria_callback_url)


def first_poll_delay(settings: Settings, lane: Lane, expected_generation: float | None) -> float:
    if cold(settings, lane, expected_generation):
        return settings.astria_cold_poll_seconds
    delay = (settings.astria_first_poll_seconds if expected_generation is None
             else min(expected_generation * 1.05, settings.astria_job_deadline_seconds))
    return delay + (settings.astria_callback_fallback_seconds
                    if settings.astria_callback_url else 0.0)


def next_poll_delay(settings: Settings, lane: Lane, expected_generation: float | None,
                    polls: int, age: float) -> float:
    """The wait after the `polls`-th poll found the prompt unfinished, `age` seconds after it was
    created. A generation time learnt since the prompt's first look (or grown) moves the next
    look to the expected finish, when that is still ahead."""
    if cold(settings, lane, expected_generation):
        return min(settings.astria_poll_interval,
                   settings.astria_cold_poll_seconds * settings.astria_poll_backoff ** polls)
    if expected_generation is not None and not settings.astria_callback_url:
        ahead = first_poll_delay(settings, lane, expected_generation) - age
        if ahead > 0:
            return ahead
    interval = min(settings.astria_poll_max_interval,
                   settings.astria_poll_interval * settings.astria_poll_backoff ** (polls - 1))
    if settings.astria_callback_url:
        return max(interval, settings.astria_callback_fallback_seconds)
    return interval
