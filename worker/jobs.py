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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

import redis

from worker.results import ResultFormat
from worker.settings import Settings
from worker.stats import Stats

T = TypeVar("T")

# Writes a result document the way Celery's Redis backend does (see `worker.results`).
_WRITE_RESULT = """
local function write_result(key_prefix, ttl, meta_prefix, id)
  local key = key_prefix .. id
  local doc = meta_prefix .. cjson.encode(id) .. '}'
  if tonumber(ttl) > 0 then redis.call('SET', key, doc, 'EX', ttl)
  else redis.call('SET', key, doc) end
  redis.call('PUBLISH', key, doc)
end
"""

_REGISTER = """
if redis.call('EXISTS', KEYS[1]) == 1 then return {'exists', ''} end
local n = tonumber(ARGV[8])
local fields = {unpack(ARGV, 9, 8 + n)}
if KEYS[3] ~= KEYS[1] then
  local leader = redis.call('GET', KEYS[3])
  if leader and leader ~= ARGV[1] and redis.call('EXISTS', ARGV[4] .. leader) == 1 then
    redis.call('HSET', KEYS[1], 'status', 'follower', 'leader', leader, unpack(fields))
    redis.call('EXPIRE', KEYS[1], ARGV[3])
    local outcome = redis.call('HGET', ARGV[4] .. leader, 'outcome')
    if outcome then return {'follower', leader, outcome} end
    redis.call('SADD', ARGV[5] .. leader, ARGV[1])
    redis.call('EXPIRE', ARGV[5] .. leader, ARGV[3])
    return {'follower', leader}
  end
  redis.call('SET', KEYS[3], ARGV[1], 'EX', ARGV[3])
end
redis.call('HSET', KEYS[1], 'status', 'queued', unpack(fields))
if #ARGV > 8 + n then redis.call('HSET', KEYS[1], unpack(ARGV, 9 + n)) end
redis.call('SET', KEYS[5], ARGV[6], 'PX', ARGV[7])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('SET', KEYS[4], ARGV[1], 'EX', ARGV[3])
return {'new', ''}
"""

_ACQUIRE = """
local owned = {}
for i = 6, #ARGV do
  local id = ARGV[i]
  if redis.call('SET', ARGV[3] .. id, ARGV[4], 'NX', 'PX', ARGV[1]) then
    redis.call('ZADD', KEYS[1], 'XX', ARGV[2], id)
    owned[#owned + 1] = id
    owned[#owned + 1] = redis.call('HGETALL', ARGV[5] .. id)
  end
end
return owned
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

_SCHEDULE = _WRITE_RESULT + """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if #ARGV > 6 then redis.call('HSET', KEYS[3], unpack(ARGV, 7)) end
if ARGV[6] ~= '' then write_result(ARGV[4], ARGV[5], ARGV[6], ARGV[3]) end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
redis.call('DEL', KEYS[1])
return 1
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
if ARGV[2] == '1' then redis.call('ZREM', KEYS[2], ARGV[3]) end
return 1
"""

_FINISH = _WRITE_RESULT + """
local p, now, retention, rkey, ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local replies = {}
for i = 6, #ARGV, 8 do
  local id, owner, mine, status, meta, state, err, seconds = unpack(ARGV, i, i + 7)
  local job = p .. 'job:' .. id
  if redis.call('GET', p .. 'lock:' .. id) ~= owner then
    replies[#replies + 1] = {'lost'}
  else
    local outcome = redis.call('HGET', job, 'outcome')
    local followers = redis.call('SMEMBERS', p .. 'followers:' .. id)
    local new = 0
    if not outcome then
      new = 1
      outcome = mine
      redis.call('HSET', job, 'outcome', outcome, 'status', status, 'finished_at', now)
      if status == 'failed' then redis.call('ZADD', KEYS[2], now, id) end
      redis.call('HINCRBY', KEYS[3], 'outcome:' .. state, 1)
      if err ~= '' then redis.call('HINCRBY', KEYS[3], 'error:' .. err, 1) end
      if seconds ~= '' then
        local old = tonumber(redis.call('GET', KEYS[4]))
        seconds = tonumber(seconds)
        if old then seconds = old * 0.8 + seconds * 0.2 end
        redis.call('SET', KEYS[4], tostring(seconds))
      end
      write_result(rkey, ttl, meta, id)
      for _, f in ipairs(followers) do write_result(rkey, ttl, meta, f) end
    end
    redis.call('ZREM', KEYS[1], id)
    redis.call('EXPIRE', job, retention)
    redis.call('DEL', p .. 'lock:' .. id)
    local reply = {'done', outcome, new}
    for _, f in ipairs(followers) do reply[#reply + 1] = f end
    replies[#replies + 1] = reply
  end
end
return replies
"""

_DELIVER = _WRITE_RESULT + """
for i = 4, #ARGV do write_result(ARGV[1], ARGV[2], ARGV[3], ARGV[i]) end
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

_RECORD_INVALID = _WRITE_RESULT + """
if redis.call('HGET', KEYS[1], 'outcome') then return 0 end
redis.call('HSET', KEYS[1], 'status', 'failed', 'spec', ARGV[2], 'outcome', ARGV[3],
           'created_at', ARGV[4], 'finished_at', ARGV[4], 'post_attempts', 0)
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
redis.call('HINCRBY', KEYS[3], 'outcome:FAILURE', 1)
redis.call('HINCRBY', KEYS[3], 'error:InvalidSpec', 1)
write_result(ARGV[6], ARGV[7], ARGV[8], ARGV[1])
return 1
"""


class LeaseLost(Exception):
    """Our lease on a job ran out and another worker may own it now; stop touching the job."""


@dataclass(frozen=True)
class Lease:
    job_id: str
    owner: str


@dataclass(frozen=True)
class Decided:
    """A job's outcome as recorded: ours, or an earlier decision (`new` False), and the
    followers it was delivered to."""

    outcome: dict[str, Any]
    new: bool
    followers: list[str]


@dataclass(frozen=True)
class Registration:
    """What `JobStore.register` did: kind is 'new' (then `lease` is ours), 'exists' (a redelivered
    message) or 'follower' (of `leader`, whose `outcome` may already be known)."""

    kind: str
    leader: str | None
    outcome: dict[str, Any] | None
    lease: Lease | None
    job: Job


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

    def __init__(self, client: redis.Redis, settings: Settings, results: ResultFormat) -> None:
        self.redis = client
        self.settings = settings
        self.results = results
        p = settings.key_prefix
        self.prefix = p
        self.due_key = f"{p}:due"
        self.dead_key = f"{p}:dead"
        self._stats_key = Stats.counters_key(p)
        self._result_args = [results.key_prefix, results.ttl]
        self._scripts = {
            name: client.register_script(src)
            for name, src in {
                "register": _REGISTER, "acquire": _ACQUIRE, "renew": _RENEW, "update": _UPDATE,
                "schedule": _SCHEDULE, "release": _RELEASE, "finish": _FINISH,
                "deliver": _DELIVER, "claim": _CLAIM_DUE, "redrive": _REDRIVE,
                "invalid": _RECORD_INVALID,
            }.items()
        }
        self._expected = _Recent[float | None](self._read_expected)
        self._routes: dict[int, _Recent[str | None]] = {}

    # --- keys -----------------------------------------------------------------------------
    def job_key(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    def _lock_key(self, job_id: str) -> str:
        return f"{self.prefix}:lock:{job_id}"  # as built by _ACQUIRE

    def _run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        return self._scripts[name](keys=keys, args=args)

    def _lease_ms(self) -> int:
        return int(self.settings.job_lease_seconds * 1000)

    def _lease_end(self) -> float:
        return time.time() + self.settings.job_lease_seconds

    # --- life cycle -----------------------------------------------------------------------
    def register(
        self, job_id: str, spec: dict[str, Any], idempotency_key: str | None,
        first_step: dict[str, Any] | None = None,
    ) -> Registration:
        """Create the job once (redelivery is a no-op), already leased to the caller, who takes
        its first step at once; if the caller dies, the job falls due when the lease runs out.
        `first_step` fields are written with a new job (the record of its first POST, saving a
        round trip), not with a follower.

        A follower (same idempotency key as a live job) shares the leader's prompt and receives
        the leader's outcome (already known, or delivered with the leader's).
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
        first = [str(x) for pair in (first_step or {}).items() for x in pair]
        job_key = self.job_key(job_id)
        idem_key = f"{self.prefix}:idem:{idempotency_key}" if idempotency_key else job_key
        lease = Lease(job_id, secrets.token_hex(8))
        kind, leader, *rest = self._run(
            "register",
            [job_key, self.due_key, idem_key, f"{self.prefix}:token:{token}",
             self._lock_key(job_id)],
            [job_id, self._lease_end(), self.settings.job_retention_seconds,
             f"{self.prefix}:job:", f"{self.prefix}:followers:", lease.owner, self._lease_ms(),
             len(flat), *flat, *first],
        )
        kind = _text(kind)
        return Registration(
            kind=kind, leader=_text(leader) or None,
            outcome=json.loads(rest[0]) if rest else None,
            lease=lease if kind == "new" else None,
            job=Job(job_id, {"status": "queued",
                             **{k: str(v) for k, v in {**fields, **(first_step or {})}.items()}}),
        )

    def record_invalid(self, job_id: str, raw_spec: Any, outcome: dict[str, Any]) -> None:
        """Keep a dead-letter record of a job whose spec failed validation, and deliver its
        outcome; once only, however often the message is delivered."""
        self._run(
            "invalid", [self.job_key(job_id), self.dead_key, self._stats_key],
            [job_id, json.dumps(raw_spec, default=str), json.dumps(outcome), time.time(),
             self.settings.job_retention_seconds, *self._result_args,
             self.results.outcome_prefix(outcome)],
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
        owned = self.acquire_many([job_id])
        return owned[0] if owned else None

    def acquire_many(self, job_ids: list[str]) -> list[tuple[Lease, Job]]:
        """`acquire` for several jobs in one round trip; those another worker owns are left out."""
        owner = secrets.token_hex(8)
        raw = self._run(
            "acquire", [self.due_key],
            [self._lease_ms(), self._lease_end(), f"{self.prefix}:lock:", owner,
             f"{self.prefix}:job:", *job_ids],
        )
        return [
            (Lease(_text(job_id), owner),
             Job(_text(job_id), {_text(k): _text(v) for k, v in zip(h[::2], h[1::2], strict=True)}))
            for job_id, h in zip(raw[::2], raw[1::2], strict=True)
        ]

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

    def schedule(
        self, lease: Lease, delay: float, *, progress: tuple[str, Any] | None = None,
        **fields: Any,
    ) -> None:
        """Set fields, make the job due again after `delay` seconds, and let go of it; with
        `progress` (state, info), also show that state in the result backend."""
        flat = [str(x) for pair in fields.items() for x in pair]
        meta = self.results.meta_prefix(*progress) if progress else ""
        if not self._run(
            "schedule",
            [self._lock_key(lease.job_id), self.due_key, self.job_key(lease.job_id)],
            [lease.owner, time.time() + delay, lease.job_id, *self._result_args, meta, *flat],
        ):
            raise LeaseLost(lease.job_id)

    def release(self, lease: Lease, *, retire: bool = False) -> None:
        """Let go of the job; it stays due (retried when its lease time passes) unless `retire`:
        then it needs no more attention (finished, or gone)."""
        self._run("release", [self._lock_key(lease.job_id), self.due_key],
                  [lease.owner, int(retire), lease.job_id])

    # --- outcomes -------------------------------------------------------------------------
    def finish(self, lease: Lease, outcome: dict[str, Any],
               generation_seconds: float | None = None) -> Decided:
        """Decide the outcome once, deliver it to the job and its followers, count it, and retire
        the job, all in one script: no crash can leave it decided but undelivered. A second
        decision keeps the first. `generation_seconds`, observed on a success, feeds the learnt
        generation time."""
        decided = self.finish_many([(lease, outcome, generation_seconds)])[0]
        if decided is None:
            raise LeaseLost(lease.job_id)
        return decided

    def finish_many(
        self, items: list[tuple[Lease, dict[str, Any], float | None]]
    ) -> list[Decided | None]:
        """`finish` for several jobs in one round trip; None for a job whose lease was lost."""
        args: list[Any] = [f"{self.prefix}:", time.time(), self.settings.job_retention_seconds,
                           *self._result_args]
        for lease, outcome, seconds in items:
            state = outcome["state"]
            args += [lease.job_id, lease.owner, json.dumps(outcome),
                     "succeeded" if state == "SUCCESS" else "failed",
                     self.results.outcome_prefix(outcome), state,
                     outcome.get("error", {}).get("type", ""),
                     "" if seconds is None else max(0.0, seconds)]
        replies = self._run("finish", [self.due_key, self.dead_key, self._stats_key,
                                       self._generation_key], args)
        results: list[Decided | None] = []
        for (lease, _, _), reply in zip(items, replies, strict=True):
            if _text(reply[0]) == "lost":
                results.append(None)
                continue
            decided = Decided(json.loads(reply[1]), int(reply[2]) == 1,
                              [_text(f) for f in reply[3:]])
            if not decided.new:  # decided before: deliver that outcome, not ours
                self.deliver([lease.job_id, *decided.followers], decided.outcome)
            results.append(decided)
        return results

    def deliver(self, job_ids: list[str], outcome: dict[str, Any]) -> None:
        """Write an already decided outcome to the result backend for these jobs."""
        self._run("deliver", [], [*self._result_args, self.results.outcome_prefix(outcome),
                                  *job_ids])

    # --- scheduling -----------------------------------------------------------------------
    def claim_due(self, limit: int) -> list[str]:
        """Take up to `limit` due jobs, pushing each past the lease so no other worker takes it."""
        ids = self._run("claim", [self.due_key], [time.time(), self._lease_end(), limit])
        return [_text(i) for i in ids]

    # --- learnt from finished prompts and 422s (read through a short local cache) ----------
    @property
    def _generation_key(self) -> str:
        return f"{self.prefix}:generation_seconds"

    def _read_expected(self) -> float | None:
        value = self.redis.get(self._generation_key)
        return float(value) if value else None

    def expected_generation_seconds(self) -> float | None:
        """The moving average (weight 0.2) of generation times that `finish` keeps."""
        return self._expected.get()

    def known_route(self, tune_id: int) -> str | None:
        """'pti' or 'faceid' once a 422 taught us that this tune must go to a base tune. Read
        at most every few seconds per process: a stale miss costs one 422, which creates and
        bills nothing."""
        if tune_id not in self._routes:
            key = f"{self.prefix}:route:{tune_id}"
            self._routes[tune_id] = _Recent(lambda: _text_or_none(self.redis.get(key)))
        return self._routes[tune_id].get()

    def remember_route(self, tune_id: int, kind: str) -> None:
        self.redis.set(f"{self.prefix}:route:{tune_id}", kind)
        self._routes.pop(tune_id, None)

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


class _Recent(Generic[T]):
    """A value read from Redis at most every CACHE_SECONDS (per process), for hints that may be
    slightly stale: the learnt generation time and routes."""

    CACHE_SECONDS = 2.0

    def __init__(self, read: Callable[[], T]) -> None:
        self._read = read
        self._value: T | None = None
        self._until = 0.0

    def get(self) -> T:
        now = time.monotonic()
        if now >= self._until:
            self._value, self._until = self._read(), now + self.CACHE_SECONDS
        return cast(T, self._value)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _text_or_none(value: Any) -> str | None:
    return _text(value) if value else None
