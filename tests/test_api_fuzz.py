"""The HTTP API fuzzed from its own OpenAPI document (schemathesis, against the live API under
uvicorn on loopback): whatever a client sends, no 5xx, and every answer is one the document
describes (status, content type, body schema). A spec the schema allows may still be refused
(422): its rules across fields and its tag grammar are in the schema's description, not its
keywords, so schemathesis's "valid data is accepted" check is left out."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import positive_data_acceptance

from tests.harness import Stack, start_api
from tests.test_api import TOKENS, tenants_file

EXAMPLES = 60  # per operation


def test_no_request_breaks_the_api(make_stack: Callable[..., Stack], tmp_path: Path) -> None:
    stack = make_stack()
    base = start_api(stack, tenants_file(tmp_path), api_rate_per_second=10_000,
                     api_rate_burst=10_000)
    schema = schemathesis.openapi.from_url(base + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} >= {"POST /v1/jobs", "GET /v1/jobs/{job_id}",
                                               "DELETE /v1/jobs/{job_id}"}
    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def fuzz(case: Any) -> None:
            case.call_and_validate(headers={"Authorization": f"Bearer {TOKENS['app']}"},
                                   excluded_checks=[positive_data_acceptance])

        fuzz()
