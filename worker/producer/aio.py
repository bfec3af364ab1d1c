"""The producer side for asyncio services: `await enqueue(spec)`, `await outcome(job_id)`,
`await cancel(job_id)`, and batches: `await enqueue_batch(specs)`, `await cancel_batch(id)`.

`outcome` waits on the job's own result channel with `redis.asyncio` (Celery's Redis backend
publishes each result document on its key): no thread and no polling while it waits. `enqueue`
and `cancel` are a few milliseconds of Redis and run the blocking producer in a thread
(`asyncio.to_thread`), so their checks and messages are exactly the blocking ones.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from worker.broker.app import app
from worker.constants import RESULT_KEY_PREFIX
from worker.flow.batching import OpenBatch
from worker.producer import sync
from worker.runtime import runtime
from worker.store.channels import final_document
from worker.store.connections import async_redis_client


async def enqueue(spec: Mapping[str, Any]) -> str:
    """`worker.producer.enqueue`, awaited."""
    return await asyncio.to_thread(sync.enqueue, spec)


async def enqueue_batch(specs: Sequence[Mapping[str, Any]], *, callback: str | None = None,
                        batch_id: str | None = None) -> OpenBatch:
    """`worker.producer.enqueue_batch`, awaited."""
    return await asyncio.to_thread(sync.enqueue_batch, specs, callback=callback,
                                   batch_id=batch_id)


async def cancel_batch(batch_id: str, *, delete_prompt: bool = False) -> dict[str, str]:
    """`worker.producer.cancel_batch`, awaited."""
    return await asyncio.to_thread(sync.cancel_batch, batch_id, delete_prompt=delete_prompt)


async def cancel(job_id: str, *, delete_prompt: bool = False) -> str:
    """`worker.producer.cancel`, awaited."""
    return await asyncio.to_thread(sync.cancel, job_id, delete_prompt=delete_prompt)


async def outcome(job_id: str, timeout: float | None = None) -> dict[str, Any]:
    """The job's outcome once decided, or its typed error raised (as `worker.outcome`);
    TimeoutError after `timeout` seconds."""
    key = RESULT_KEY_PREFIX + job_id
    client = async_redis_client(runtime().settings)
    try:
        async with client.pubsub(ignore_subscribe_messages=True) as pubsub:
            await pubsub.subscribe(key)  # before the read: a decision in between is heard
            doc = final_document(await client.get(key))
            async with asyncio.timeout(timeout):
                while doc is None:
                    message = await pubsub.get_message(timeout=5.0)
                    doc = final_document(message["data"] if message
                                         else await client.get(key))
    finally:
        await client.aclose()
    if doc["status"] == "SUCCESS":
        result: dict[str, Any] = doc["result"]
        return result
    raise app.backend.exception_to_python(doc["result"])
