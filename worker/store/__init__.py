"""The store: every job's durable state in Redis, changed only by Lua scripts; and the records
around jobs (registrations, webhooks, dead messages, engines' heartbeats)."""

from worker.store.engines import EngineRegistry
from worker.store.jobs import JobStore
from worker.store.learnt import Learnt
from worker.store.messages import DeadMessages
from worker.store.registration import Registrations
from worker.store.scripts import Script, Scripts
from worker.store.types import Decided, Lease, LeaseLost, Registration
from worker.store.webhooks import WebhookStore

__all__ = ["DeadMessages", "Decided", "EngineRegistry", "JobStore", "Learnt", "Lease",
           "LeaseLost", "Registration", "Registrations", "Script", "Scripts", "WebhookStore"]
