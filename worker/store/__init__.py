"""The job store: every job's durable state in Redis, changed only by Lua scripts."""

from worker.store.jobs import Decided, JobStore, Lease, LeaseLost, Registration
from worker.store.learnt import Learnt
from worker.store.scripts import Script, Scripts

__all__ = ["Decided", "JobStore", "Learnt", "Lease", "LeaseLost", "Registration", "Script",
           "Scripts"]
