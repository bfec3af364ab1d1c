"""The store owns Redis: every job's durable state, changed only by its Lua scripts, the
dispatcher's grant, the records around jobs (registrations, webhooks, dead messages, engines'
heartbeats, counters, results) and the connections. May import the layers below: core, spec,
net, astria."""

from worker.store.batches import Batch, BatchCreated, Batches
from worker.store.engines import EngineRegistry
from worker.store.jobs import JobStore
from worker.store.learnt import Learnt
from worker.store.messages import DeadMessages
from worker.store.registration import Registrations
from worker.store.scripts import Script, Scripts
from worker.store.types import (
    CallbackTaken,
    Decided,
    Lease,
    LeaseLost,
    Moved,
    Registered,
    Registration,
)
from worker.store.webhooks import WebhookStore

__all__ = ["Batch", "BatchCreated", "Batches", "CallbackTaken", "DeadMessages", "Decided",
           "EngineRegistry", "JobStore", "Learnt", "Lease", "LeaseLost", "Moved", "Registered",
           "Registration", "Registrations", "Script", "Scripts", "WebhookStore"]
