"""What we send producers matches the schemas committed under schema/ (worker/flow/shapes.py):
a success's outcome from a real flow, a failure as the result backend holds it, every webhook
event's body."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.unit.scripted_astria import Answer, Call
from tests.unit.test_flow import Flow, flow, prompt  # noqa: F401  (the fixture)
from worker.flow.shapes import Failure, Outcome, WebhookEvent, schemas
from worker.flow.webhooks import event_body
from worker.records import Failed, Revoked, Succeeded
from worker.store.results import ResultFormat, webhook_type

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", sorted(schemas()))
def test_committed_schemas_are_current(name: str) -> None:
    committed = json.loads((ROOT / "schema" / f"{name}.schema.json").read_text())
    assert committed == schemas()[name]  # astria-queue schema --of NAME


def test_what_a_job_sends_matches_its_schemas(flow: Callable[..., Flow]) -> None:  # noqa: F811
    def astria(call: Call) -> Answer:
        if call.method == "POST":
            return 200, [prompt(91), prompt(92)]
        return 200, [prompt(pid, images=2, cost_mc=1500, trained_at="2026-12-03T00:00:05Z")
                     for pid in (92, 91)]

    f = flow(astria)
    job_id = f.enqueue()
    f.run_due()
    f.run_due(later=600)
    succeeded = f.job(job_id).outcome
    assert isinstance(succeeded, Succeeded)
    Outcome.model_validate(succeeded.result, strict=True)
    for outcome in (succeeded, Failed("PromptFailed", "flagged"), Revoked("expired")):
        body = event_body(job_id, webhook_type(outcome), outcome, time.time())
        assert WebhookEvent.validate_json(body).type == webhook_type(outcome)
        if not isinstance(outcome, Succeeded):
            doc = json.loads(ResultFormat(60).outcome_prefix(outcome) + '"id"}')
            Failure.model_validate(doc["result"], strict=True)
