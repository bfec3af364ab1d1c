"""The unit layer: pure functions, and each Lua script against a real Redis, no processes."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis

from worker.constants import Keys
from worker.records import Job
from worker.settings import Settings
from worker.spec import parse_spec
from worker.store.dispatch import Dispatcher
from worker.store.jobs import JobStore
from worker.store.registration import Registrations
from worker.store.results import ResultFormat
from worker.store.types import Lease, Posting, Registration
from worker.store.webhooks import WebhookStore


def posting(job: Job) -> Posting:
    """A POST of the job to tune 1, recorded now."""
    return Posting(job, 1, "x", False, time.time())


@dataclass
class Store:
    """A job store and a dispatcher on a key prefix of their own."""

    redis: redis.Redis
    settings: Settings
    keys: Keys
    jobs: JobStore
    dispatcher: Dispatcher
    registrations: Registrations
    webhooks: WebhookStore

    owner: str = ""

    def jid(self, name: str) -> str:
        """A job id of this test's own (result keys are not prefixed)."""
        return f"{self.keys.prefix}.{name}"

    def register(self, name: str, post_by: float = 0.0, **spec: Any) -> Registration:
        full = {"tune_id": 1, "text": f"text of {name}", **spec}
        return self.registrations.register(self.jid(name), parse_spec(full), post_by=post_by)

    def grant(self, room: int = 100, now: float | None = None) -> dict[str, str]:
        """Job name -> kind of every unit granted now (names as given to `register`)."""
        grant = self.dispatcher.grant(room, now=now)
        if grant.units:
            self.owner = grant.owner
        return {u.id.removeprefix(self.keys.prefix + "."): str(u.kind) for u in grant.units}

    def grant_webhooks(self, room: int = 100, now: float | None = None) -> list[str]:
        """Message ids of the webhooks granted now."""
        return self.dispatcher.grant(0, room, now=now).webhooks

    def lease(self, name: str) -> tuple[Lease, Job]:
        return Lease(self.jid(name), self.owner), self.jobs.load(self.jid(name))


@pytest.fixture
def make_store(redis_server: tuple[str, bool]) -> Iterator[Any]:
    client = redis.Redis.from_url(redis_server[0])
    prefixes: list[str] = []

    def make(**settings: Any) -> Store:
        prefix = "unit-" + uuid.uuid4().hex[:10]
        prefixes.append(prefix)
        s = Settings(astria_api_key="k", key_prefix=prefix,  # type: ignore[arg-type]
                     redis_url=redis_server[0], **settings)
        keys = Keys(prefix)
        jobs = JobStore(client, s, keys, ResultFormat(3600))
        return Store(client, s, keys, jobs, Dispatcher(jobs.scripts, s, keys),
                     Registrations(jobs), WebhookStore(client, keys, jobs.scripts, 3600))

    yield make
    for prefix in prefixes:
        for key in client.scan_iter(f"{prefix}:*", count=1000):
            client.delete(key)


@pytest.fixture
def store(make_store: Any) -> Store:
    return make_store()  # type: ignore[no-any-return]
