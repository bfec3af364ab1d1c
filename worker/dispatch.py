"""`Dispatcher`: the one place that decides which job gets the next Astria request.

Every worker process asks it for work when it has room (`grant`). The decision is one Lua script
(`worker/store/lua/grant.lua`) over state shared in Redis, so every process and host follows the
same order and the same limits:

- **Rate limits**, one per kind of request: creating prompts (`submit`) and everything else
  (`poll`: reading prompts, listing them, deleting one). Each is a token bucket whose rate looks
  for Astria's own limit below ASTRIA_RATE_LIMIT_PER_SECOND: a 429 sets it just under what Astria
  let through since the previous 429, each answered request while it is the bottleneck lets it
  grow 0.15%, Retry-After pauses it. Polls have their own bucket, so they are never starved by
  submissions, nor starve them; they go on credit, since one listing answers many and returns
  the tokens it saved.
- **Lanes**: POSTs go to `interactive` jobs first, then `normal`, then `batch`; while a higher lane
  has a backlog, each lower one still gets LANE_MIN_SHARE of the POSTs.
- **Tenants**: within a lane, tenants take turns (start-time fair queueing, TENANT_WEIGHTS), and a
  tenant at TENANT_MAX_IN_FLIGHT prompts in flight waits; a tenant with 10,000 queued jobs delays
  another's by its fair share only.

Outcomes of requests come back through `report_*` and reach the limiter with the next `grant`.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from worker.constants import Keys
from worker.records import LANES, RequestKind, as_text
from worker.settings import Settings
from worker.store.scripts import Scripts


@dataclass(frozen=True)
class Unit:
    """One piece of work granted to this process: a job (or webhook) id and what it needs."""

    id: str
    kind: RequestKind


@dataclass(frozen=True)
class Grant:
    units: list[Unit]
    owner: str  #: the lease owner token of every job in `units`
    wait: float  #: seconds until more work may be due (the next token, the next due time)


class Reports:
    """Request outcomes since the last grant, per kind, for the limiter."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ok: defaultdict[str, int] = defaultdict(int)
        self._throttled: defaultdict[str, int] = defaultdict(int)
        self._retry_after: defaultdict[str, float] = defaultdict(float)
        self._sent: defaultdict[str, float] = defaultdict(float)
        self._unused: defaultdict[str, int] = defaultdict(int)

    def unused(self, kind: RequestKind, tokens: int) -> None:
        """Granted units that made no request of their own: their tokens go back."""
        with self._lock:
            self._unused[kind] += tokens

    def ok(self, kind: RequestKind) -> None:
        with self._lock:
            self._ok[kind] += 1

    def throttled(self, kind: RequestKind, retry_after: float | None, sent_at: float) -> None:
        """A 429 to a request sent at `sent_at` (wall clock): the limiter ignores it if it cut
        the rate since."""
        with self._lock:
            self._throttled[kind] += 1
            self._retry_after[kind] = max(self._retry_after[kind], retry_after or 0.0)
            self._sent[kind] = max(self._sent[kind], sent_at)

    def take(self) -> dict[str, dict[str, float]]:
        with self._lock:
            report = {kind: {"ok": self._ok[kind], "throttled": self._throttled[kind],
                             "retry_after": self._retry_after[kind], "sent": self._sent[kind],
                             "unused": self._unused[kind]}
                      for kind in set(self._ok) | set(self._throttled) | set(self._unused)}
            for counts in (self._ok, self._throttled, self._retry_after, self._sent,
                           self._unused):
                counts.clear()
        return report

    def restore(self, report: dict[str, dict[str, float]]) -> None:
        """Put back a report that could not be delivered (Redis away)."""
        with self._lock:
            for kind, values in report.items():
                self._ok[kind] += int(values["ok"])
                self._throttled[kind] += int(values["throttled"])
                self._retry_after[kind] = max(self._retry_after[kind], values["retry_after"])
                self._sent[kind] = max(self._sent[kind], values["sent"])
                self._unused[kind] += int(values["unused"])


class Dispatcher:
    def __init__(self, scripts: Scripts, settings: Settings, keys: Keys) -> None:
        self._scripts = scripts
        self._settings = settings
        self.reports = Reports()
        s = settings
        self._keys = {
            "due_submit": keys.due_submit, "due_poll": keys.due_poll, "due_local": keys.due_local,
            **{f"ready_{lane}": keys.ready(lane) for lane in LANES},
            **{f"turns_{lane}": keys.turns(lane) for lane in LANES},
            "queued": keys.queued, "expiry": keys.expiry, "leases": keys.leases,
            "inflight": keys.inflight, "inflight_jobs": keys.inflight_jobs,
            "limiter": keys.limiter, "dispatch": keys.dispatch,
            "webhooks_due": keys.webhooks_due,
        }
        self._policy = {
            "lease_seconds": s.job_lease_seconds, "ceiling": s.astria_rate_limit_per_second,
            "burst": s.astria_rate_limit_burst, "lanes": ",".join(LANES),
            "shares": json.dumps({str(k): v for k, v in s.lane_min_share.items()}),
            "weights": json.dumps(s.tenant_weights), "caps": json.dumps(s.tenant_max_in_flight),
            "default_cap": s.tenant_default_max_in_flight,
        }

    def grant(self, room: int, *, now: float | None = None) -> Grant:
        """Up to `room` units of work, each leased to the returned owner token."""
        owner = secrets.token_hex(8)
        report = self.reports.take()
        args: dict[str, Any] = {**self._policy, "owner": owner, "room": room,
                                "report": json.dumps(report), "now": "" if now is None else now}
        try:
            reply = self._scripts.grant(keys=self._keys, args=args)
        except Exception:
            self.reports.restore(report)
            raise
        wait, *flat = (as_text(x) for x in reply)
        units = [Unit(flat[i], RequestKind(flat[i + 1])) for i in range(0, len(flat), 2)]
        return Grant(units, owner, float(wait))
