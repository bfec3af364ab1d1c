"""Fixtures: a real Redis (REDIS_URL, or a throwaway redis-server), the simulator, workers."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from astria_local.redis_server import ThrowawayRedis
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

    def make(**kwargs: Any) -> Stack:
        stack = Stack(redis_server[0], redis_server[1], **kwargs)
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
