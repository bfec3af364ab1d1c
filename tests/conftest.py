"""Fixtures: a real Redis (REDIS_URL, or a throwaway redis-server), the simulator, workers."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from astria_local.redis_server import ThrowawayRedis
from astria_local.webhook_endpoint import WebhookEndpoint
from tests.harness import Stack


@pytest.fixture(scope="session")
def redis_server() -> Iterator[tuple[str, bool]]:
    given = os.environ.get("REDIS_URL")
    if given:
        yield given, False
        return
    with ThrowawayRedis() as server:
        yield server.url, True


@pytest.fixture
def make_stack(redis_server: tuple[str, bool]) -> Iterator[Callable[..., Stack]]:
    stacks: list[Stack] = []

    def make(*, base: str | None = None, **kwargs: Any) -> Stack:
        """A stack on the session's Redis, or on `base`, a Redis server of the test's own."""
        stack = Stack(base or redis_server[0], bool(base) or redis_server[1], **kwargs)
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        stack.close()


@pytest.fixture
def stack(make_stack: Callable[..., Stack]) -> Stack:
    """A stack with one running worker."""
    s = make_stack()
    s.start_worker()
    return s


@pytest.fixture
def webhook_endpoints() -> Iterator[Callable[..., WebhookEndpoint]]:
    """Producers' webhook endpoints on loopback (`astria_local.webhook_endpoint`): make one with
    the endpoint's own arguments; each is closed after the test."""
    made: list[WebhookEndpoint] = []

    def make(*args: Any, **kwargs: Any) -> WebhookEndpoint:
        made.append(WebhookEndpoint(*args, **kwargs))
        return made[-1]

    yield make
    for endpoint in made:
        endpoint.close()
