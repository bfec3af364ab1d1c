"""A smoke test against the real Astria, run only when you give it a key and a free tune.

    ASTRIA_SMOKE_API_KEY=sd_... ASTRIA_SMOKE_TUNE_ID=123 \
        .venv/bin/pytest tests/test_smoke_real_astria.py

Use a tune created with `branch=fast`: it is free and returns mock images.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from tests.harness import Stack

KEY = os.environ.get("ASTRIA_SMOKE_API_KEY")
TUNE = os.environ.get("ASTRIA_SMOKE_TUNE_ID")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (KEY and TUNE),
                       reason="set ASTRIA_SMOKE_API_KEY and ASTRIA_SMOKE_TUNE_ID to run"),
]


def test_one_prompt_on_the_real_astria(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack()
    stack.start_worker(astria_base_url="https://api.astria.ai", astria_api_key=KEY,
                       astria_first_poll_seconds=10, astria_poll_interval=5,
                       astria_rate_limit_per_second=2, astria_rate_limit_burst=2)
    out = stack.outcome(stack.send({"tune_id": int(TUNE or 0), "text": "ohwx man, smoke test",
                                    "num_images": 1}), timeout=900)
    assert out["images"] and out["requested_tune_id"] == int(TUNE or 0)
