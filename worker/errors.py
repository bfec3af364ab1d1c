"""The project's one exception hierarchy:

    AstriaQueueError
    ├── ConfigError            a setting is missing or invalid
    ├── InvalidSpec            what a producer sent breaks a rule (the job fails at once)
    ├── InvalidMessage         a broker message that cannot be read (a dead message)
    ├── DestinationRefused     a webhook destination that is not public, or does not resolve
    ├── AstriaError            Astria answered with an error, or could not be reached
    │   ├── AstriaRejected     a 4xx other than 429: never retried
    │   └── AstriaUnavailable  5xx / network errors outlasted the retry budget (429s spend none)
    ├── PromptFailed           Astria set `user_error` on the prompt
    │   └── TuneExpired        the prompt's tune expired before its images came
    ├── PromptTimeout          no images before the job's deadline
    └── InternalError          a job's steps kept failing unexpectedly

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


class InvalidMessage(AstriaQueueError):
    """A broker message that cannot be read as `astria.submit_prompt` (not JSON, no usable
    envelope, an ETA): it is kept as a dead letter (`astria-queue dead messages`), and its task
    id, when one can be read, ends in FAILURE with this error."""


class DestinationRefused(AstriaQueueError):
    """A webhook destination is, or resolves to, an address webhooks may not reach (loopback,
    private, link-local, ...; see `worker.net.addresses`), or does not resolve. Never retried."""


class AstriaError(AstriaQueueError):
    """Astria answered with an error, or could not be reached."""

    status: int | None = None


class AstriaRejected(AstriaError):
    """A 4xx other than 429: Astria refused the request. Never retried."""


class AstriaUnavailable(AstriaError):
    """Retries for 5xx / network errors ran out of attempts or time (a 429 is the account's limit
    and spends none of them: `worker.astria.retry.throttled_wait`)."""


class PromptFailed(AstriaQueueError):
    """Astria accepted the prompt but set ``user_error`` on it."""


class TuneExpired(PromptFailed):
    """The prompt's tune expired at Astria (its `expires_at` passed) before the prompt had its
    images: they will never come."""


class PromptTimeout(AstriaQueueError):
    """The prompt had no images before the job's deadline."""


class InternalError(AstriaQueueError):
    """The job's steps failed unexpectedly STEP_FAILURE_LIMIT times (`worker.flow.steps`; a bug, or
    an answer nothing anticipated): the job ends instead of taking a thread at every lease for
    ever. The worker log has each traceback; `astria-queue dead redrive` resumes the job (it
    keeps its prompt)."""
