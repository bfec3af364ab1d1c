"""`JobStore`: each job's durable state in Redis, and the `due` set that makes jobs crash-safe.

Why this exists: Celery messages are only *triggers*. Once a job is registered, the truth is a hash
(`{prefix}:job:{id}`) plus an entry in the sorted set `{prefix}:due` scored by when the job next
needs attention. A worker working on a job holds a lease (`{prefix}:lock:{id}`) and pushes the due
time past the lease; if it dies, the lease runs out, the job falls due again and any worker's
scheduler re-dispatches it. Waiting for images costs no worker slot: a waiting job is just a score.
Every transition that matters is one Lua script checked against the lease owner, so two workers can
never both record a prompt or both decide an outcome.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import dataclass
from typing import Any

import redis

from worker.settings import Settings

_REGISTER = """
if redis.call('EXISTS', KEYS[1]) == 1 then return {'exists', ''} end
local n = tonumber(ARGV[4])
local fields = {}
for i = 1, n do fields[i] = ARGV[4 + i] end
if KEYS[3] ~= KEYS[1] then
  local leader = redis.call('GET', KEYS[3])
  if leader and leader ~= ARGV[1] and redis.call('EXISTS', ARGV[6 + n] .. leader) == 1 then
    redis.call('HSET', KEYS[1], 'status', 'follower', 'leader', leader, unpack(fields))
    redis.call('EXPIRE', KEYS[1], ARGV[5 + n])
    local outcome = redis.call('HGET', ARGV[6 + n] .. leader, 'outcome')
    if outcome then return {'follower', leader, outcome} end
    redis.call('SADD', ARGV[7 + n] .. leader, ARGV[1])
    redis.call('EXPIRE', ARGV[7 + n] .. leader, ARGV[5 + n])
    return {'follower', leader}
  end
  redis.call('SET', KEYS[3], ARGV[1], 'EX', ARGV[5 + n])
end
redis.call('HSET', KEYS[1], 'status', 'queued', unpack(fields))
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
redis.call('SET', KEYS[4], ARGV[1], 'EX', ARGV[5 + n])
return {'new', ''}
"""

_ACQUIRE = """
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return false end
redis.call('ZADD', KEYS[2], 'XX', ARGV[3], ARGV[4])
return redis.call('HGETALL', KEYS[3])
"""

_RENEW = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], 'XX', ARGV[3], ARGV[4])
return 1
"""

_UPDATE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if #ARGV > 1 then redis.call('HSET', KEYS[2], unpack(ARGV, 2)) end
return 1
"""

_SCHEDULE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if #ARGV > 3 then redis.call('HSET', KEYS[3], unpack(ARGV, 4)) end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
redis.call('DEL', KEYS[1])
return 1
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"""

_DECIDE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return false end
local outcome = redis.call('HGET', KEYS[2], 'outcome')
local new = 0
if not outcome then
  new = 1
  outcome = ARGV[2]
  redis.call('HSET', KEYS[2], 'outcome', outcome, 'status', ARGV[3], 'finished_at', ARGV[4])
  if ARGV[3] == 'failed' then redis.call('ZADD', KEYS[4], ARGV[4], ARGV[5]) end
end
redis.call('ZADD', KEYS[3], ARGV[6], ARGV[5])
local result = {outcome, new}
for _, f in ipairs(redis.call('SMEMBERS', KEYS[5])) do result[#result + 1] = f end
return result
"""

_DELIVERED = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('ZREM', KEYS[3], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('DEL', KEYS[1])
return 1
"""

_CLAIM_DUE = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
for _, id in ipairs(ids) do redis.call('ZADD', KEYS[1], ARGV[2], id) end
return ids
"""

_REDRIVE = """
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'failed' then return status or 'missing' end
local next = 'queued'
if redis.call('HGET', KEYS[1], 'prompt_id') then next = 'waiting' end
redis.call('HDEL', KEYS[1], 'outcome', 'finished_at')
redis.call('HINCRBY', KEYS[1], 'redriven', 1)
redis.call('HSET', KEYS[1], 'status', next, 'deadline', ARGV[3], 'polls', 0)
redis.call('PERSIST', KEYS[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return 'redriven'
"""

_RECORD_INVALID = """
if redis.call('HGET', KEYS[1], 'outcome') then return 0 end
redis.call('HSET', KEYS[1], 'status', 'failed', 'spec', ARGV[2], 'outcome', ARGV[3],
           'created_at', ARGV[4], 'finished_at', ARGV[4], 'post_attempts', 0)
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
return 1
"""


_LEARN = """
local old = tonumber(redis.call('GET', KEYS[1]))
local new = tonumber(ARGV[1])
if old then new = old * 0.8 + new * 0.2 end
redis.call('SET', KEYS[1], tostring(new))
return tostring(new)
"""


class LeaseLost(Exception):
    """Our lease on a job ran out and another worker may own it now; stop touching the job."""


@dataclass(frozen=True)
class Lease:
    job_id: str
    owner: str


@dataclass(frozen=True)
class Job:
    """A snapshot of one job's hash."""

    id: str
    fields: dict[str, str]

    def _num(self, name: str, default: float = 0.0) -> float:
        value = self.fields.get(name)
        return float(value) if value not in (None, "") else default

    @property
    def status(self) -> str:
        return self.fields.get("status", "missing")

    @property
    def spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = json.loads(self.fields.get("spec", "{}"))
        return spec

    @property
    def requested_tune_id(self) -> int:
        return int(self.spec["tune_id"])

    @property
    def seed(self) -> int:
        return int(self._num("seed"))

    @property
    def token(self) -> str:
        return self.fields.get("token", "")

    @property
    def deadline(self) -> float:
        return self._num("deadline")

    @property
    def prompt_id(self) -> int | None:
        value = self.fields.get("prompt_id")
        return int(value) if value else None

    @property
    def pending_post(self) -> float:
        """When a POST whose answer was never recorded was sent (0: none)."""
        return self._num("pending_post")

    @property
    def post_attempts(self) -> int:
        return int(self._num("post_attempts"))

    @property
    def polls(self) -> int:
        return int(self._num("polls"))

    @property
    def outcome(self) -> dict[str, Any] | None:
        raw = self.fields.get("outcome")
        return json.loads(raw) if raw else None

    def get(self, name: str) -> str | None:
        return self.fields.get(name)


class JobStore:
    """Redis keys and atomic transitions of jobs; see the module docstring for the design."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.redis = client
        self.settings = settings
        p = settings.key_prefix
        self.prefix = p
        self.due_key = f"{p}:due"
        self.dead_key = f"{p}:dead"
        self._scripts = {
            name: client.register_script(src)
            for name, src in {
                "register": _REGISTER, "acquire": _ACQUIRE, "renew": _RENEW, "update": _UPDATE,
                "schedule": _SCHEDULE, "release": _RELEASE, "decide": _DECIDE,
                "delivered": _DELIVERED, "claim": _CLAIM_DUE, "redrive": _REDRIVE,
                "invalid": _RECORD_INVALID, "learn": _LEARN,
            }.items()
        }

    # --- keys -----------------------------------------------------------------------------
    def job_key(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    def _lock_key(self, job_id: str) -> str:
        return f"{self.prefix}:lock:{job_id}"

    def _run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        return self._scripts[name](keys=keys, args=args)

    def _lease_ms(self) -> int:
        return int(self.settings.job_lease_seconds * 1000)

    def _lease_end(self) -> float:
        return time.time() + self.settings.job_lease_seconds

    # --- life cycle -----------------------------------------------------------------------
    def register(
        self, job_id: str, spec: dict[str, Any], idempotency_key: str | None
    ) -> tuple[str, str | None, dict[str, Any] | None]:
        """Create the job once (redelivery is a no-op) and make it due now.

        Returns (kind, leader, outcome): kind is 'new', 'exists' or 'follower'; a follower shares
        the leader's prompt and receives the leader's outcome (already known, or delivered later).
        """
        now = time.time()
        seed = spec.get("seed")
        token = secrets.token_urlsafe(16)
        fields = {
            "spec": json.dumps(spec, sort_keys=True),
            "created_at": now,
            "deadline": now + self.settings.astria_job_deadline_seconds,
            "seed": seed if seed is not None else int.from_bytes(os.urandom(4), "big"),
            "token": token,
            "post_attempts": 0,
            "polls": 0,
        }
        flat = [str(x) for pair in fields.items() for x in pair]
        job_key = self.job_key(job_id)
        idem_key = f"{self.prefix}:idem:{idempotency_key}" if idempotency_key else job_key
        kind, leader, *rest = self._run(
            "register",
            [job_key, self.due_key, idem_key, f"{self.prefix}:token:{token}"],
            [job_id, now, now, len(flat), *flat, self.settings.job_retention_seconds,
             f"{self.prefix}:job:", f"{self.prefix}:followers:"],
        )
        outcome = json.loads(rest[0]) if rest else None
        return _text(kind), _text(leader) or None, outcome

    def record_invalid(self, job_id: str, raw_spec: Any, outcome: dict[str, Any]) -> None:
        """Keep a dead-letter record of a job whose spec failed validation."""
        self._run(
            "invalid", [self.job_key(job_id), self.dead_key],
            [job_id, json.dumps(raw_spec, default=str), json.dumps(outcome), time.time(),
             self.settings.job_retention_seconds],
        )

    def load(self, job_id: str) -> Job:
        raw = self.redis.hgetall(self.job_key(job_id))
        return Job(job_id, {_text(k): _text(v) for k, v in raw.items()})

    def job_for_token(self, token: str) -> str | None:
        value = self.redis.get(f"{self.prefix}:token:{token}")
        return _text(value) if value else None

    # --- leases ---------------------------------------------------------------------------
    def acquire(self, job_id: str) -> tuple[Lease, Job] | None:
        """Own the job for JOB_LEASE_SECONDS and read it, or None if another worker owns it."""
        lease = Lease(job_id, secrets.token_hex(8))
        raw = self._run(
            "acquire", [self._lock_key(job_id), self.due_key, self.job_key(job_id)],
            [lease.owner, self._lease_ms(), self._lease_end(), job_id],
        )
        if raw is None:
            return None
        return lease, Job(job_id, {_text(k): _text(v) for k, v in zip(raw[::2], raw[1::2],
                                                                           strict=True)})

    def renew(self, lease: Lease) -> None:
        if not self._run(
            "renew", [self._lock_key(lease.job_id), self.due_key],
            [lease.owner, self._lease_ms(), self._lease_end(), lease.job_id],
        ):
            raise LeaseLost(lease.job_id)

    def update(self, lease: Lease, **fields: Any) -> None:
        """Set fields on the job, only while we still own it."""
        flat = [str(x) for pair in fields.items() for x in pair]
        if not self._run(
            "update", [self._lock_key(lease.job_id), self.job_key(lease.job_id)],
            [lease.owner, *flat],
        ):
            raise LeaseLost(lease.job_id)

    def schedule(self, lease: Lease, delay: float, **fields: Any) -> None:
        """Set fields, make the job due again after `delay` seconds, and let go of it."""
        flat = [str(x) for pair in fields.items() for x in pair]
        if not self._run(
            "schedule",
            [self._lock_key(lease.job_id), self.due_key, self.job_key(lease.job_id)],
            [lease.owner, time.time() + delay, lease.job_id, *flat],
        ):
            raise LeaseLost(lease.job_id)

    def release(self, lease: Lease) -> None:
        self._run("release", [self._lock_key(lease.job_id)], [lease.owner])

    # --- outcomes -------------------------------------------------------------------------
    def decide(
        self, lease: Lease, outcome: dict[str, Any]
    ) -> tuple[dict[str, Any], bool, list[str]]:
        """Record the outcome once (a second decision keeps the first); return it, whether it is
        new, and the job's followers. The job stays due until `delivered`, so a crash in between
        delivers the same outcome again."""
        status = "succeeded" if outcome["state"] == "SUCCESS" else "failed"
        reply = self._run(
            "decide",
            [self._lock_key(lease.job_id), self.job_key(lease.job_id), self.due_key,
             self.dead_key, f"{self.prefix}:followers:{lease.job_id}"],
            [lease.owner, json.dumps(outcome), status, time.time(), lease.job_id,
             self._lease_end()],
        )
        if not reply:
            raise LeaseLost(lease.job_id)
        return json.loads(reply[0]), int(reply[1]) == 1, [_text(f) for f in reply[2:]]

    def delivered(self, lease: Lease) -> None:
        """The outcome is in the result backend: the job needs no more attention."""
        self._run(
            "delivered",
            [self._lock_key(lease.job_id), self.job_key(lease.job_id), self.due_key],
            [lease.owner, lease.job_id, self.settings.job_retention_seconds],
        )

    # --- scheduling -----------------------------------------------------------------------
    def claim_due(self, limit: int) -> list[str]:
        """Take up to `limit` due jobs, pushing each past the lease so no other worker takes it."""
        ids = self._run("claim", [self.due_key], [time.time(), self._lease_end(), limit])
        return [_text(i) for i in ids]

    # --- generation time learnt from finished prompts --------------------------------------
    def expected_generation_seconds(self) -> float | None:
        value = self.redis.get(f"{self.prefix}:generation_seconds")
        return float(value) if value else None

    def learn_generation_seconds(self, seconds: float) -> None:
        """Fold one observed generation time into the moving average (weight 0.2)."""
        self._run("learn", [f"{self.prefix}:generation_seconds"], [max(0.0, seconds)])

    # --- routes learnt from 422s ----------------------------------------------------------
    def known_route(self, tune_id: int) -> str | None:
        value = self.redis.get(f"{self.prefix}:route:{tune_id}")
        return _text(value) if value else None

    def remember_route(self, tune_id: int, kind: str) -> None:
        self.redis.set(f"{self.prefix}:route:{tune_id}", kind)

    # --- dead letters ---------------------------------------------------------------------
    def dead_jobs(self, limit: int = 100) -> list[Job]:
        """Failed jobs, newest first; records whose retention ran out are pruned."""
        jobs = []
        for raw in self.redis.zrevrange(self.dead_key, 0, limit - 1):
            job = self.load(_text(raw))
            if job.fields:
                jobs.append(job)
            else:
                self.redis.zrem(self.dead_key, job.id)
        return jobs

    def redrive(self, job_id: str) -> str:
        """Put a failed job back to work; it keeps its prompt id and its record of any POST
        whose answer was lost, so it resumes or reconciles instead of creating a second prompt."""
        now = time.time()
        return _text(
            self._run(
                "redrive", [self.job_key(job_id), self.due_key, self.dead_key],
                [job_id, now, now + self.settings.astria_job_deadline_seconds],
            )
        )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
