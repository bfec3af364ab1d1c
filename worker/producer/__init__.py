"""The producer side, safe to import in any service (it sets no current app, connects no
signal, replaces no control command): `enqueue`, `outcome`, `cancel`, blocking; the same
awaitable in `worker.producer.aio` for asyncio services."""

from worker.producer.sync import cancel, cancel_tenant, check_spec, enqueue, job_result, outcome

__all__ = ["cancel", "cancel_tenant", "check_spec", "enqueue", "job_result", "outcome"]
