"""`Dispatcher`: the one place that decides which job gets the next Astria request.

Every worker process asks it for work when it has room (`grant`). The decision is one Lua script
(`worker/store/lua/grant.lua`) over state shared in Redis, so every process and host follows the
same order and the same limits:

- **Rate limits**, one per kind of request: creating prompts (`submit`) and everything else
  (`poll`: reading prompts, listing them, deleting one). Each is a token bucket whose rate looks
  for Astria's own limit below ASTRIA_RATE_LIMIT_PER_SECOND from what Astria let through once
  its 429s began, taking a few stray 429s for noise (`lua/lib/limiter.lua` says how);
  Retry-After after a window over the limit pauses it. Polls have their own bucket, so they
  are never starved by submissions, nor starve them; they go on credit, since one listing
  answers many and returns the tokens it saved.
- **Lanes**: POSTs go to `interactive` jobs first, then `normal`, then `batch`; while a higher lane
  has a backlog, each lower one still gets LANE_MIN_SHARE of the POSTs.
- **Tenants**: within a lane, tenants take turns (start-time fair queueing, TENANT_WEIGHTS), and a
  tenant at TENANT_MAX_IN_FLIGHT prompts in flight waits; a tenant with 10,000 queued jobs delays
  another's by its fair share only.

Outcomes of requests come back through `reports` (`Reports`) and reach the limiter with the next
`grant`.

Webhooks to producers are granted in the same round trip by their own script
(`grant_webhooks.lua`), from their own budget of threads (WEBHOOK_CONCURRENCY): a producer's slow
endpoint can never hold a thread an Astria request needs.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from worker.constants import Keys
from worker.records import LANES, RequestKind, as_text
from worker.settings import Settings
from worker.store.scripts import Batch, Scripts
from worker.store.webhooks import FAILURES_TO_HOLD


@dataclass(frozen=True)
class Unit:
    """One piece of work granted to this process: a job id and what it needs."""

    id: str
    kind: RequestKind


@dataclass(frozen=True)
class Grant:
    units: list[Unit]
    owner: str  #: the lease owner token of every job in `units`
    wait: float  #: seconds until more work may be due (the next token, the next due time)
    webhooks: list[str] = field(default_factory=list)  #: webhook message ids to deliver
    copies: list[str] = field(default_factory=list)  #: job ids whose images to copy
    now: float = 0.0  #: the time the grant used: Redis's clock (or the one it was given)


class Reports:
    """Request outcomes since the last grant, per kind, for the limiter: each answer as how long
    ago its request was sent, so the limiter counts what Astria's limit passed by when requests
    reached it, not by when their answers came back (answers overtake each other)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock  #: when requests were sent and reports taken (a seam for tests)
        self._lock = threading.Lock()
        #: when the requests were sent, of the answers that passed and of the 429s
        self._passed: defaultdict[str, list[float]] = defaultdict(list)
        self._throttled: defaultdict[str, list[float]] = defaultdict(list)
        self._retry_after: defaultdict[str, float] = defaultdict(float)
        self._unused: defaultdict[str, int] = defaultdict(int)

    def unused(self, kind: RequestKind, tokens: int) -> None:
        """Granted units that made no request of their own: their tokens go back."""
        with self._lock:
            self._unused[kind] += tokens

    def ok(self, kind: RequestKind, sent: float) -> None:
        """An answer other than a 429 to a request sent at `sent` (the clock's time)."""
        with self._lock:
            self._passed[kind].append(sent)

    def throttled(self, kind: RequestKind, sent: float, retry_after: float | None) -> None:
        """A 429 to a request sent at `sent`, with Astria's Retry-After if it gave one."""
        with self._lock:
            self._throttled[kind].append(sent)
            self._retry_after[kind] = max(self._retry_after[kind], retry_after or 0.0)

    def take(self) -> dict[str, dict[str, Any]]:
        """The report, each answer's send time as its age (seconds before now): the limiter
        places it on Redis's clock, which no host shares."""
        with self._lock:
            now = self._clock()
            report = {kind: {"ok": [round(now - at, 4) for at in self._passed[kind]],
                             "throttled": [round(now - at, 4) for at in self._throttled[kind]],
                             "retry_after": self._retry_after[kind],
                             "unused": self._unused[kind]}
                      for kind in set(self._passed) | set(self._throttled) | set(self._unused)}
            for counts in (self._passed, self._throttled, self._retry_after, self._unused):
                counts.clear()
        return report

    def restore(self, report: dict[str, dict[str, Any]]) -> None:
        """Put back a report that could not be delivered (Redis away)."""
        with self._lock:
            now = self._clock()
            for kind, values in report.items():
                self._passed[kind] += [now - age for age in values["ok"]]
                self._throttled[kind] += [now - age for age in values["throttled"]]
                self._retry_after[kind] = max(self._retry_after[kind], values["retry_after"])
                self._unused[kind] += int(values["unused"])


class Dispatcher:
    def __init__(self, scripts: Scripts, settings: Settings, keys: Keys) -> None:
        self._scripts = scripts
        self._settings = settings
        self.reports = Reports()
        s = settings
        self._keys = {
            "due_submit": keys.due_submit, "due_poll": keys.due_poll, "due_local": keys.due_local,
            "queued": keys.queued, "expiry": keys.expiry, "leases": keys.leases,
            "inflight": keys.inflight, "inflight_jobs": keys.inflight_jobs,
            "limiter": keys.limiter, "dispatch": keys.dispatch,
            "sent_submit": keys.limiter_sent(RequestKind.SUBMIT),
            "sent_poll": keys.limiter_sent(RequestKind.POLL),
            "lanes": [key for lane in LANES for key in (keys.ready(lane), keys.turns(lane))],
        }
        self._policy: dict[str, Any] = {
            "lease_seconds": s.job_lease_seconds, "ceiling": s.astria_rate_limit_per_second,
            "burst": s.astria_rate_limit_burst, "lanes": ",".join(LANES),
            "shares": json.dumps({str(k): v for k, v in s.lane_min_share.items()}),
            "weights": json.dumps(s.turn_weights()), "caps": json.dumps(s.turn_caps()),
            "default_cap": s.tenant_default_max_in_flight,
        }
        self._webhook_policy: dict[str, Any] = {
            "lease_seconds": s.webhook_lease_seconds,
            "per_destination": s.webhook_max_in_flight_per_destination,
            "failures_to_hold": FAILURES_TO_HOLD, "retry_for": s.webhook_retry_for_seconds,
            "webhook_prefix": keys.webhook(""), "destination_prefix": keys.destination(""),
        }
        self._webhooks_due = keys.webhooks_due
        self._copies_due = keys.copies_due
        self._copy_lease_seconds = s.storage_lease_seconds

    def grant(self, room: int, webhook_room: int = 0, copy_room: int = 0, *,
              now: float | None = None) -> Grant:
        """Up to `room` units of work, each leased to the returned owner token, up to
        `webhook_room` webhooks and `copy_room` jobs' copies, in one round trip."""
        owner = secrets.token_hex(8)
        report = self.reports.take()
        clock = "" if now is None else now
        batch = Batch(self._scripts.client)
        batch.add(self._scripts.grant, keys=self._keys,
                  args={**self._policy, "owner": owner, "room": room,
                        "report": json.dumps(report), "now": clock})
        batch.add(self._scripts.grant_webhooks, keys={"webhooks_due": self._webhooks_due},
                  args={**self._webhook_policy, "room": webhook_room, "now": clock})
        if copy_room:  # with no copy thread free (or no STORAGE_URL), not even asked
            batch.add(self._scripts.grant_copies, keys={"copies_due": self._copies_due},
                      args={"room": copy_room, "now": clock,
                            "lease_seconds": self._copy_lease_seconds})
        try:
            jobs, webhooks, *copies = batch.execute()
        except Exception:
            self.reports.restore(report)
            raise
        wait, clock_now, *flat = (as_text(x) for x in jobs)
        hooks_wait, *hooks = (as_text(x) for x in webhooks)
        copies_wait, *copy_ids = (as_text(x) for x in copies[0]) if copies else ("3600",)
        units = [Unit(flat[i], RequestKind(flat[i + 1])) for i in range(0, len(flat), 2)]
        return Grant(units, owner, min(float(wait), float(hooks_wait), float(copies_wait)), hooks,
                     copy_ids, float(clock_now))
