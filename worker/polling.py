"""When to look at a prompt again: near its expected finish, then backing off.

The first poll comes when the prompt should be done, from a moving average of Astria's own
`created_at -> trained_at` times (before any data: ASTRIA_FIRST_POLL_SECONDS); then every
ASTRIA_POLL_INTERVAL x ASTRIA_POLL_BACKOFF^n, capped at ASTRIA_POLL_MAX_INTERVAL. With callbacks
on, polling is only the fallback for a callback that never came (Astria does not retry them).
"""

from __future__ import annotations

from worker.settings import Settings


def first_poll_delay(settings: Settings, expected_generation: float | None) -> float:
    delay = (settings.astria_first_poll_seconds if expected_generation is None
             else min(expected_generation * 1.05, settings.astria_job_deadline_seconds))
    return delay + (settings.astria_callback_fallback_seconds
                    if settings.astria_callback_url else 0.0)


def next_poll_delay(settings: Settings, polls: int) -> float:
    """The wait after the `polls`-th poll found the prompt unfinished."""
    interval = min(settings.astria_poll_max_interval,
                   settings.astria_poll_interval * settings.astria_poll_backoff ** (polls - 1))
    if settings.astria_callback_url:
        return max(interval, settings.astria_callback_fallback_seconds)
    return interval
