"""Webhook records in Redis: the dead letters an operator lists and sends again."""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis

from worker.constants import Keys
from worker.records import as_text
from worker.store.scripts import Scripts


@dataclass(frozen=True)
class DeadWebhook:
    webhook_id: str
    job_id: str
    type: str
    url: str
    attempts: int
    last_error: str


class WebhookStore:
    def __init__(self, client: redis.Redis, keys: Keys, scripts: Scripts,
                 retention: int) -> None:
        self._redis = client
        self._keys = keys
        self._scripts = scripts
        self._retention = retention

    def dead(self, limit: int = 100) -> list[DeadWebhook]:
        """Webhooks whose deliveries ran out, newest first."""
        out = []
        for raw in self._redis.zrevrange(self._keys.webhooks_dead, 0, limit - 1):
            message_id = as_text(raw)
            hook = {as_text(k): as_text(v)
                    for k, v in self._redis.hgetall(self._keys.webhook(message_id)).items()}
            out.append(DeadWebhook(message_id, hook.get("job_id", ""), hook.get("type", ""),
                                   hook.get("url", ""), int(hook.get("attempts") or 0),
                                   hook.get("last_error", "")))
        return out

    def redrive(self, message_id: str) -> str:
        """Send a dead webhook again (same webhook-id and body, a new retry window)."""
        k = self._keys
        return as_text(self._scripts.webhook_redrive(
            keys={"webhook": k.webhook(message_id), "webhooks_due": k.webhooks_due,
                  "webhooks_dead": k.webhooks_dead},
            args={"message_id": message_id, "now": time.time(), "retention": self._retention}))
