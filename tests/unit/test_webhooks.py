"""Webhook bodies and signatures, checked with the Standard Webhooks reference package."""

from __future__ import annotations

import base64
import json

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from worker.flow.webhooks import event_body, signed_headers, verify
from worker.records import Failed, Revoked, Succeeded

SECRET = "whsec_" + base64.b64encode(b"a-key-of-more-than-16-bytes").decode()


def test_a_signed_webhook_verifies_with_the_reference_package() -> None:
    body = event_body("job-1", "job.succeeded", Succeeded({"job_id": "x", "images": ["u"]}),
                      1_700_000_000.0)
    headers = signed_headers([SECRET], "msg_job-1", body)
    assert headers["webhook-signature"].startswith("v1,")
    payload = Webhook(SECRET).verify(body, headers)
    assert payload == {"type": "job.succeeded", "timestamp": "2023-11-14T22:13:20.000Z",
                       "data": {"job_id": "job-1", "images": ["u"]}}
    assert verify(headers, body, SECRET) == payload


def test_a_tampered_body_or_another_secret_fails() -> None:
    body = event_body("j", "job.revoked", Revoked("expired"), 1_700_000_000.0)
    headers = signed_headers([SECRET], "msg_j", body)
    with pytest.raises(WebhookVerificationError):
        verify(headers, body.replace(b"expired", b"revoked"), SECRET)
    other = "whsec_" + base64.b64encode(b"another-key-of-16-bytes").decode()
    with pytest.raises(WebhookVerificationError):
        verify(headers, body, other)


def test_failure_bodies_carry_the_error_class_and_message() -> None:
    body = json.loads(event_body("j", "job.failed", Failed("PromptFailed", "user_error: x"), 0))
    assert body["data"] == {"job_id": "j", "error": "PromptFailed", "message": "user_error: x"}
