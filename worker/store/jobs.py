"""`JobStore`: each job's durable record in Redis, and every transition of it.

Celery messages only *trigger* work. Once registered, the truth is the job's hash plus its place
in the dispatch structures (`worker.constants.Keys`): its lane's queue while it waits for its
POST, a due set while it waits for anything else. Whoever works on a job holds its lease (granted
by `worker.store.dispatch`), and every transition is one Lua script checked against that lease: two
workers can never both record a prompt or both decide an outcome, and a worker that dies leaves
the job due again when its lease ends.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis

from worker.astria.prompt import Prompt
from worker.constants import RESULT_KEY_PREFIX, Keys, tenant_counter
from worker.records import (
    Failed,
    Job,
    JobState,
    Lane,
    Outcome,
    Revoked,
    as_text,
    outcome_from_json,
    outcome_to_json,
)
from worker.settings import Settings
from worker.store.learnt import Recent
from worker.store.results import ResultFormat, outcome_status, webhook_type
from worker.store.scripts import Batch, Scripts
from worker.store.types import (
    CallbackTaken,
    Decided,
    Ending,
    Lease,
    LeaseLost,
    Moved,
    NextPoll,
    Posting,
    event,
    job_fields,
)

log = logging.getLogger("astria.store")
#: Callbacks wake one job at most once in this many seconds (Astria sends one; more can only be
#: forged or replayed: each costs at most a poll, and the real one is at most this late).
CALLBACK_SPACING = 5.0


class JobStore:
    """Redis keys and atomic transitions of jobs; see the module docstring for the design."""

    def __init__(self, client: redis.Redis, settings: Settings, keys: Keys,
                 results: ResultFormat) -> None:
        self.redis = client
        self.settings = settings
        self.keys = keys
        self.results = results
        self.scripts = Scripts(client)
        self._replicas = Recent(self._connected_replicas)

    def batch(self, *, durable: bool = False) -> Batch:
        """A round trip of script calls; durable ones wait for REDIS_WAIT_REPLICAS replicas
        (the record of a POST about to be sent, a registration, a prompt id, an outcome), or
        for as many as the master has now: a master left alone (its replica died, or it was
        just promoted) does not make every write wait for the timeout."""
        replicas = min(self.settings.wait_replicas, self._replicas.get()) if durable else 0
        return Batch(self.redis, replicas, self.settings.redis_wait_timeout_ms)

    def _connected_replicas(self) -> int:
        if not self.settings.wait_replicas:
            return 0
        return int(self.redis.info("replication").get("connected_slaves", 0))

    # --- keys of one job ----------------------------------------------------------------------
    def _job_keys(self, job_id: str, lane: Lane) -> dict[str, str]:
        """The eleven KEYS every script that moves one job starts with (lua/lib/job.lua)."""
        k = self.keys
        return {"job": k.job(job_id), "leases": k.leases, "due_submit": k.due_submit,
                "due_poll": k.due_poll, "due_local": k.due_local, "queued": k.queued,
                "expiry": k.expiry, "inflight": k.inflight, "inflight_jobs": k.inflight_jobs,
                "ready": k.ready(lane), "turns": k.turns(lane)}

    def _event_keys(self, job_id: str, lane: Lane) -> dict[str, str]:
        """`_job_keys`, and where an event's webhook is queued (lua/lib/job_event.lua)."""
        return {**self._job_keys(job_id, lane), "webhooks_due": self.keys.webhooks_due}

    @property
    def _event_args(self) -> dict[str, Any]:
        return {"events": self.keys.events_channel, "webhook_prefix": self.keys.webhook(""),
                "retention": self.settings.job_retention_seconds}

    def outcome_keys(self, job_id: str) -> dict[str, str]:
        k = self.keys
        return {"followers": k.followers(job_id), "result": k.result(job_id), "live": "",
                "dead": k.dead, "stats": k.stats, "generation": k.generation_seconds,
                "latency": k.job_latency, "webhooks_due": k.webhooks_due,
                "inline": k.inline_image(job_id)}

    def outcome_args(self, outcome: Outcome, tenant: str, lane: Lane, *, doc: str | None = None
                     ) -> dict[str, Any]:
        """The ARGV of a decision (lib/decide.lua); `doc`, its result document when the caller
        has it made already."""
        return {"retention": self.settings.job_retention_seconds,
                "outcome": outcome_to_json(outcome),
                "doc": self.results.outcome_prefix(outcome) if doc is None else doc,
                "ttl": self.results.ttl,
                "result_prefix": RESULT_KEY_PREFIX, "counter": tenant_counter(tenant, lane),
                "webhook_prefix": self.keys.webhook(""), "token_prefix": self.keys.token(""),
                "events": self.keys.events_channel, "batch_prefix": self.keys.batch("")}

    # --- reading --------------------------------------------------------------------------------
    def load(self, job_id: str) -> Job:
        return Job.from_hash(job_id, self.redis.hgetall(self.keys.job(job_id)))

    def load_many(self, job_ids: list[str]) -> dict[str, Job]:
        """The jobs, in one round trip; a record that cannot be read is logged and left out
        (its lease ends and it is looked at again; it never stops the others)."""
        pipe = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hgetall(self.keys.job(job_id))
        loaded = {}
        for job_id, raw in zip(job_ids, pipe.execute(), strict=True):
            try:
                loaded[job_id] = Job.from_hash(job_id, raw)
            except Exception as exc:
                log.error("job %s: its record cannot be read (%s: %s)", job_id,
                          type(exc).__name__, str(exc)[:200], extra={"job_id": job_id})
        return loaded

    def inline_image(self, job_id: str) -> str | None:
        """The job's `input_image_base64`, kept apart until its prompt exists."""
        value = self.redis.get(self.keys.inline_image(job_id))
        return as_text(value) if value else None

    def job_for_token(self, token: str) -> str | None:
        value = self.redis.get(self.keys.token(token))
        return as_text(value) if value else None

    def live_jobs(self, tenant: str) -> list[str]:
        return sorted(as_text(x) for x in self.redis.smembers(self.keys.live(tenant)))

    def dead_jobs(self, limit: int = 100) -> list[Job]:
        """Failed jobs, newest first; records whose retention ran out are pruned."""
        jobs = []
        for raw in self.redis.zrevrange(self.keys.dead, 0, limit - 1):
            job = self.load(as_text(raw))
            if job.status is JobState.MISSING:
                self.redis.zrem(self.keys.dead, job.id)
            else:
                jobs.append(job)
        return jobs

    # --- transitions of a job we hold ------------------------------------------------------------
    # Each verb says what happened; the fields it writes on the job's record are named here (and
    # in `worker.store.types`) only, and `job_fields` checks them against the `Job` record.
    def record_posts(self, items: list[tuple[Lease, Posting]]) -> list[Moved]:
        """Record POSTs before they are sent, in one round trip: OK (send it), REVOKED
        (cancelled: send nothing), NOT_DURABLE (the record did not reach REDIS_WAIT_REPLICAS
        replicas: send nothing now, `retract` it) or LOST each. A POST whose record a failover
        could take back is never sent: the record is how a lost answer finds its prompt instead
        of paying for another."""
        batch = self.batch(durable=True)
        now = time.time()
        for lease, posting in items:
            job = posting.job
            batch.add(self.scripts.mark_posting,
                      keys={**self._event_keys(job.id, job.lane), "stats": self.keys.stats},
                      args={"job_id": job.id, "owner": lease.owner, "now": now, **self._event_args,
                            "event": event("posted", attempt=job.post_attempts + 1),
                            "fields": job_fields(posting.fields())})
        replies = [Moved(as_text(reply)) for reply in batch.execute()]
        return [r if r is not Moved.OK or batch.durable else Moved.NOT_DURABLE for r in replies]

    def retract(self, lease: Lease, job: Job) -> None:
        """A recorded POST that was not sent (its record is not durable): back to its queue in
        a second. Should this write be lost too, the record says "maybe sent", and the job looks
        for a prompt before it POSTs: slower, never twice."""
        self.post_again(lease, job, at=time.time() + 1.0)

    def post_again(self, lease: Lease, job: Job, *, at: float, new_budget: bool = False,
                   ambiguous: bool = False, budget_of: Job | None = None) -> None:
        """The job's last POST created nothing (refused, throttled, re-routed, or unanswered
        and its prompt never showed: `ambiguous`, counted): back to its lane's queue at `at`;
        `new_budget` starts its retry policy afresh; `budget_of`, the job before the POST, when
        the POST spent none of it."""
        fields: dict[str, Any] = {"pending_post": 0, "gave_up_at": 0, "list_before": 0,
                                  "list_oldest": 0}
        if new_budget:
            fields.update(retry_attempt=0, retry_since=0)
        if budget_of is not None:
            fields.update(retry_attempt=budget_of.retry_attempt,
                          retry_since=budget_of.retry_since)
        if ambiguous:
            fields["ambiguous_posts"] = job.ambiguous_posts + 1
        self._requeue(lease, job, at, fields,
                      event("retrying", request="POST", due_at=at, ambiguous=ambiguous))

    def requeue(self, lease: Lease, job: Job, *, at: float) -> None:
        """Back to the lane's queue, in its place, unchanged (taken over before its POST)."""
        self._requeue(lease, job, at, {}, "")

    def _requeue(self, lease: Lease, job: Job, at: float, fields: dict[str, Any],
                 event: str) -> None:
        keys = {**self._event_keys(job.id, job.lane), "dispatch": self.keys.dispatch}
        reply = Moved(as_text(self.scripts.requeue(
            keys=keys, args={"job_id": job.id, "owner": lease.owner, "now": time.time(),
                             "at": at, **self._event_args, "event": event,
                             "fields": job_fields(fields)})))
        if reply is Moved.LOST:
            raise LeaseLost(job.id)

    def look_for_prompt(self, lease: Lease, job: Job, *, gave_up_at: float) -> None:
        """The POST went unanswered and may have created a prompt: list the tune for it in a
        second (a new request with its own retry budget). `gave_up_at`, by Redis's clock."""
        at = time.time() + 1.0
        self._schedule([(lease, job, at, {"retry_attempt": 0, "retry_since": 0,
                                          "gave_up_at": gave_up_at},
                         event("reconciling", due_at=at))])

    def list_next(self, lease: Lease, job: Job, *, before_id: int, oldest: float) -> None:
        """The listing's page held no prompt of the job: the page before it, at once."""
        self._schedule([(lease, job, time.time(), {"list_before": before_id, "list_oldest": oldest,
                                                   "retry_attempt": 0, "retry_since": 0}, "")])

    def list_again(self, lease: Lease, job: Job, *, at: float) -> None:
        """No prompt of the job's unanswered POST yet, and it may still show: the listing from
        its newest page again at `at`."""
        self._schedule([(lease, job, at, {"list_before": 0, "list_oldest": 0,
                                          "retry_attempt": 0, "retry_since": 0}, "")])

    def schedule_retry(self, lease: Lease, job: Job, *, at: float, spent: bool = True) -> None:
        """A request of the job's step failed for now: the step again at `at`, one attempt
        further into its retry policy (none when not `spent`: a 429)."""
        attempt, fields = job.retry_attempt, {}
        if spent:
            attempt += 1
            fields = {"retry_attempt": attempt, "retry_since": job.retry_since or time.time()}
        self._schedule([(lease, job, at, fields, event("retrying", attempt=attempt, due_at=at))])

    def record_prompts(self, lease: Lease, job: Job, prompt_ids: list[int], *, tune_id: int,
                       text: str, rerouted: bool, first_poll_at: float) -> Moved:
        """The job's POST created these prompts: it waits for their images (WAITING), its
        deadline from now; or, cancelled meanwhile, they are recorded (REVOKED, or DELETE)."""
        now = time.time()
        several = len(prompt_ids) > 1
        info = {"prompt_id": prompt_ids[0], "tune_id": tune_id,
                "requested_tune_id": job.requested_tune_id, "rerouted": rerouted,
                **({"prompt_ids": prompt_ids} if several else {})}
        fields = {"prompt_id": prompt_ids[0],
                  "prompt_ids": ",".join(map(str, prompt_ids)) if several else "",
                  "prompts_done": "", "tune_id": tune_id, "rerouted": rerouted,
                  "sent_text": text, "pending_post": 0, "submitted_at": now, "polls": 0,
                  "deadline": now + self.settings.astria_job_deadline_seconds,
                  "retry_attempt": 0, "retry_since": 0, "list_before": 0, "list_oldest": 0}
        keys = self._event_keys(job.id, job.lane)
        keys.update(result=self.keys.result(job.id), inline=self.keys.inline_image(job.id))
        batch = self.batch(durable=True)
        batch.add(self.scripts.created, keys=keys,
                  args={"job_id": job.id, "owner": lease.owner, "now": now,
                        "first_poll_at": first_poll_at, "doc": self.results.waiting_prefix(info),
                        "ttl": self.results.ttl, **self._event_args,
                        "event": event("waiting", prompt_id=prompt_ids[0], prompt_ids=prompt_ids),
                        "batch_prefix": self.keys.batch(""), "fields": job_fields(fields)})
        reply = Moved(as_text(batch.execute()[0]))
        if reply is Moved.LOST:
            raise LeaseLost(job.id)
        return reply

    def schedule_polls(self, polls: list[NextPoll]) -> None:
        """The next look at each of these waiting jobs, in one round trip."""
        self._schedule([
            (p.lease, p.job, p.at, {"polls": p.job.polls + 1,
                                    **({} if p.done is None
                                       else {"prompts_done": Prompt.dumps(p.done)}),
                                    **({} if p.deadline is None else {"deadline": p.deadline})},
             "")
            for p in polls])

    def _schedule(self, items: list[tuple[Lease, Job, float, dict[str, Any], str]]) -> None:
        """Let go of each job until its time (a non-POST step); LeaseLost if any was not ours."""
        batch = self.batch()
        now = time.time()
        for lease, job, at, fields, what in items:
            batch.add(self.scripts.schedule, keys=self._event_keys(job.id, job.lane),
                      args={"job_id": job.id, "owner": lease.owner, "now": now, "at": at,
                            **self._event_args, "event": what,
                            "fields": job_fields(fields)})
        lost = [job.id for (_, job, *_), reply in zip(items, batch.execute(), strict=True)
                if Moved(as_text(reply)) is Moved.LOST]
        if lost:
            raise LeaseLost(", ".join(lost))

    def renew(self, leases: list[Lease], until: float) -> int:
        """Extend leases still ours to `until` (requests still running); how many were."""
        if not leases:
            return 0
        k = self.keys
        return int(self.scripts.renew(
            keys={"leases": k.leases, "due_poll": k.due_poll, "due_local": k.due_local},
            args={"lease_end": until,
                  "held": [value for lease in leases for value in (lease.job_id, lease.owner)]}))

    def retire(self, lease: Lease, job: Job) -> None:
        """Let go of a job with nothing left to do (cancelled, decided, or gone)."""
        self._release(lease, job, retire=True, fields={})

    def prompt_deleted(self, lease: Lease, job: Job) -> None:
        """The prompts of a job cancelled with delete_prompt are deleted at Astria: retired."""
        self._release(lease, job, retire=True, fields={"prompt_deleted": 1})

    def delete_failed(self, lease: Lease, job: Job, error: str) -> None:
        """Astria did not delete the prompts of a cancelled job, for good: retired, with the
        reason kept on its record for operators."""
        self._release(lease, job, retire=True, fields={"delete_error": error})

    def step_failed(self, lease: Lease, job: Job) -> None:
        """A step failed unexpectedly: counted, and the job is due again when its lease ends."""
        self._release(lease, job, retire=False,
                      fields={"step_failures": job.step_failures + 1})

    def _release(self, lease: Lease, job: Job, *, retire: bool, fields: dict[str, Any]) -> None:
        self.scripts.release(
            keys=self._job_keys(job.id, job.lane),
            args={"job_id": job.id, "owner": lease.owner, "retire": int(retire),
                  "fields": job_fields(fields)})

    def finish(self, endings: list[Ending]) -> list[Decided | None]:
        """Decide each outcome once, in one round trip: deliver it to the job and its followers,
        count it, queue the webhooks and retire the job; a second decision keeps the first, and
        a job that was not ours gets None. `seconds`, Astria's generation time on a success,
        feeds the learnt generation time."""
        batch = self.batch(durable=True)
        now = time.time()
        for e in endings:
            job, outcome = e.job, e.outcome
            batch.add(self.scripts.finish,
                      keys={**self._job_keys(job.id, job.lane), **self.outcome_keys(job.id),
                            "live": self.keys.live(job.tenant), "copies_due": self.keys.copies_due},
                      args={"job_id": job.id, "owner": e.lease.owner, "now": now,
                            **self.outcome_args(outcome, job.tenant, job.lane),
                            "status": outcome_status(outcome), "state": outcome.state,
                            "error": outcome.error if isinstance(outcome, Failed) else "",
                            "seconds": "" if e.seconds is None else max(0.0, e.seconds),
                            "cost": "" if e.cost_mc is None else e.cost_mc,
                            "webhook_url": job.webhook_url or "",
                            "webhook_type": webhook_type(outcome),
                            "copy": int(bool(self.settings.storage_url_for(job.tenant))),
                            "fields": job_fields(e.fields())})
        return [None if as_text(reply[0]) == "lost"
                else Decided(outcome_from_json(as_text(reply[0])), int(reply[1]) == 1)
                for reply in batch.execute()]

    # --- transitions from outside (producers, the callback receiver, operators) ----------------
    def cancel(self, job_id: str, *, reason: str = "revoked", delete_prompt: bool = False
               ) -> JobState:
        """Cancel a job (see lua/cancel.lua); returns REVOKED, or the final state it kept."""
        job = self.load(job_id)
        outcome = Revoked(reason)
        keys = {**self._job_keys(job_id, job.lane), **self.outcome_keys(job_id),
                "live": self.keys.live(job.tenant), "revoked": self.keys.revoked,
                "leader_followers": self.keys.followers(job.leader or job_id)}
        args = self.outcome_args(outcome, job.tenant, job.lane)
        return JobState(as_text(self.scripts.cancel(
            keys=keys,
            args={"job_id": job_id, "now": time.time(), **args,
                  "webhook_url": job.webhook_url or "", "delete_prompt": int(delete_prompt)})))

    def callback(self, job_id: str, prompt_id: int) -> CallbackTaken:
        """Astria called back for the job's prompt: due for its poll at once, or CALLBACK_SPACING
        after the last callback (QUEUED), or when its holder lets go (HELD); IGNORED when it
        waits for no such prompt."""
        k = self.keys
        return CallbackTaken(as_text(self.scripts.callback(
            keys={"job": k.job(job_id), "leases": k.leases, "due_poll": k.due_poll},
            args={"job_id": job_id, "prompt_id": str(prompt_id), "now": time.time(),
                  "wake": k.wake, "spacing": CALLBACK_SPACING})))

    def redrive(self, job_id: str) -> str:
        """Put a failed job back to work under the same id; it keeps its prompt id and its
        record of an unanswered POST, so it resumes or reconciles instead of paying again."""
        job = self.load(job_id)
        now = time.time()
        seq = job.seq or f"{int(now * 1_000_000):017d}"
        keys = {**self._event_keys(job_id, job.lane), "dead": self.keys.dead,
                "live": self.keys.live(job.tenant), "result": self.keys.result(job_id),
                "dispatch": self.keys.dispatch}
        return as_text(self.scripts.redrive(
            keys=keys,
            args={"job_id": job_id, "now": now,
                  "deadline": now + self.settings.astria_job_deadline_seconds,
                  "lane": job.lane, "member": f"{job.tenant}|{seq}|{job_id}",
                  "tenant": job.tenant, "wake": self.keys.wake,
                  "token_prefix": self.keys.token(""), **self._event_args,
                  "batch_prefix": self.keys.batch("")}))
