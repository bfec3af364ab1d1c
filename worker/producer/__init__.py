"""The producer side, safe to import in any service (it sets no current app, connects no
signal, replaces no control command): `enqueue`, `outcome`, `cancel`, and
`enqueue_batch`, `batch`, `cancel_batch`, blocking; the same
awaitable in `worker.producer.aio` for asyncio services."""

from worker.producer.sync import (
    batch,
    cancel,
    cancel_batch,
    cancel_tenant,
    check_spec,
    enqueue,
    enqueue_batch,
    job_result,
    outcome,
)

__all__ = ["batch", "cancel", "cancel_batch", "cancel_tenant", "check_spec", "enqueue",
           "enqueue_batch", "job_result", "outcome"]
