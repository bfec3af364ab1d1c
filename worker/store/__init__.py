"""The job store: every job's durable state in Redis, changed only by Lua scripts."""

from worker.store.jobs import JobStore
from worker.store.learnt import Learnt
from worker.store.scripts import Script, Scripts
from worker.store.types import Decided, Lease, LeaseLost, Registration

__all__ = ["Decided", "JobStore", "Learnt", "Lease", "LeaseLost", "Registration", "Script",
           "Scripts"]
