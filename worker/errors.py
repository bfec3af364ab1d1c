"""The project's one exception hierarchy.

Every exception takes a single message argument: Celery stores a failed job's exception as
``{exc_type, exc_module, exc_message}`` in JSON and rebuilds it with ``cls(*args)``, so extra
constructor arguments would not survive the trip to the producer. Messages never contain the key.
"""

from __future__ import annotations


class AstriaQueueError(Exception):
    """Base class of every error this project raises on purpose."""


class ConfigError(AstriaQueueError):
    """A setting is missing or invalid; the message names the environment variable."""


class InvalidSpec(AstriaQueueError):
    """The prompt spec breaks a rule; the message names the field and the rule. Never retried."""


class AstriaError(AstriaQueueError):
    """Astria answered with an error, or could not be reached."""

    status: int | None = None


class AstriaRejected(AstriaError):
    """A 4xx other than 429: Astria refused the request. Never retried."""


class AstriaUnavailable(AstriaError):
    """Retries for 429 / 5xx / network errors ran out of attempts or time."""


class PromptFailed(AstriaQueueError):
    """Astria accepted the prompt but set ``user_error`` on it."""


class PromptTimeout(AstriaQueueError):
    """The prompt had no images before the job's deadline."""
