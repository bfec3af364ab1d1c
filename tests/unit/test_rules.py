"""Pure rules of the job path: routing, poll timing, the retry policy."""

from __future__ import annotations

import pytest

from worker.astria.client import TransientError
from worker.astria.polling import first_poll_delay, next_poll_delay
from worker.astria.prompt import read_prompt
from worker.astria.retry import astria_policy, next_attempt_in, webhook_policy
from worker.astria.routing import Target, route, unsupported_kind
from worker.errors import InvalidSpec
from worker.flow.outcomes import generation_seconds
from worker.records import LANES, Job, Lane
from worker.settings import Settings
from worker.spec import parse_spec

S = Settings(astria_api_key="k")  # type: ignore[arg-type]


def test_a_tune_not_known_to_need_a_base_goes_to_itself() -> None:
    spec = parse_spec({"tune_id": 5, "text": "ohwx"})
    assert route(S, spec, None) == Target(5, "ohwx", rerouted=False)


def test_a_pti_tune_goes_to_the_sdxl_base_with_its_lora_tag() -> None:
    spec = parse_spec({"tune_id": 5, "text": "ohwx", "lora_strength": 0.6})
    assert route(S, spec, "pti") == Target(666678, "<lora:5:0.6> ohwx", rerouted=True)
    tagged = parse_spec({"tune_id": 5, "text": "<lora:5:0.9> ohwx"})
    assert route(S, tagged, "pti").text == "<lora:5:0.9> ohwx"  # not doubled
    with pytest.raises(InvalidSpec, match="one LoRA"):
        route(S, parse_spec({"tune_id": 5, "text": "<lora:7:0.5> x"}), "pti")


def test_a_faceid_tune_goes_to_its_base_with_the_faceid_tag() -> None:
    spec = parse_spec({"tune_id": 5, "text": "ohwx"})
    assert route(S, spec, "faceid") == Target(690204, "<faceid:5:1> ohwx", rerouted=True)


def test_which_422s_re_route() -> None:
    assert unsupported_kind("Astria 422: model_type=pti is not supported. Use a checkpoint "
                            "instead") == "pti"
    assert unsupported_kind("model_type=faceid is not supported") == "faceid"
    assert unsupported_kind("Astria 422: text: can't be blank") is None


def test_first_poll_at_the_expected_finish_and_later_with_callbacks() -> None:
    for lane in LANES:
        assert first_poll_delay(S, lane, 20.0) == pytest.approx(21.0)
    assert first_poll_delay(S, Lane.NORMAL, None) == S.astria_first_poll_seconds
    with_callbacks = Settings(astria_api_key="k",  # type: ignore[arg-type]
                              astria_callback_url="https://x.test/cb")
    assert first_poll_delay(with_callbacks, Lane.NORMAL, 20.0) == pytest.approx(21.0 + 30.0)
    assert first_poll_delay(with_callbacks, Lane.INTERACTIVE, None) == pytest.approx(5.0 + 30.0)


def test_interactive_jobs_look_early_and_often_until_a_generation_time_is_learnt() -> None:
    """A cold start: 0.5 s, then backing off to the poll interval (one listing answers them)."""
    assert first_poll_delay(S, Lane.INTERACTIVE, None) == S.astria_cold_poll_seconds
    delays = [next_poll_delay(S, Lane.INTERACTIVE, None, n, 0.5) for n in range(1, 8)]
    assert delays[:3] == [0.75, 1.125, 1.6875]
    assert max(delays) == S.astria_poll_interval
    assert next_poll_delay(S, Lane.BATCH, None, 1, 5.0) == S.astria_poll_interval
    # learnt after the first look (0.5 s in): the next one at the expected finish
    assert next_poll_delay(S, Lane.INTERACTIVE, 1.0, 1, 0.5) == pytest.approx(0.55)
    assert next_poll_delay(S, Lane.INTERACTIVE, 1.0, 1, 1.1) == S.astria_poll_interval


def test_polls_back_off_up_to_the_cap() -> None:
    delays = [next_poll_delay(S, Lane.NORMAL, 20.0, n, 21.0) for n in range(1, 8)]
    assert delays[:3] == [5.0, 7.5, 11.25]
    assert max(delays) == S.astria_poll_max_interval


def test_the_retry_policy_honours_retry_after_and_stops() -> None:
    policy = astria_policy(S)
    throttled = TransientError("429", status=429, retry_after=7.0)
    assert next_attempt_in(policy, attempt=1, started_at=100.0, error=throttled,
                           now=101.0) == 7.0
    backoff = next_attempt_in(policy, attempt=2, started_at=100.0,
                              error=TransientError("503"), now=101.0)
    assert backoff is not None and 0 <= backoff <= 2 * S.astria_retry_initial_delay
    assert next_attempt_in(policy, attempt=S.astria_retry_attempts, started_at=100.0,
                           error=TransientError("503"), now=101.0) is None
    assert next_attempt_in(policy, attempt=2, started_at=100.0, error=TransientError("503"),
                           now=100.0 + S.astria_retry_max_seconds) is None
    assert next_attempt_in(policy, attempt=1, started_at=100.0, error=InvalidSpec("x"),
                           now=101.0) is None  # not retried at all


def test_webhooks_retry_within_seconds_at_first_and_for_a_day() -> None:
    policy = webhook_policy(S)
    first = next_attempt_in(policy, attempt=1, started_at=0.0, error=Exception(), now=1.0)
    assert first is not None and first <= 10
    late = next_attempt_in(policy, attempt=30, started_at=0.0, error=Exception(),
                           now=23 * 3600.0)
    assert late is not None and late <= S.webhook_max_retry_interval
    assert next_attempt_in(policy, attempt=40, started_at=0.0, error=Exception(),
                           now=24 * 3600.0 + 1) is None


def test_an_answer_is_read_into_a_bounded_prompt_or_refused() -> None:
    """Astria's answers are outside input too: what decides a job is strict, what only informs
    becomes unknown when it is out of range."""
    assert read_prompt({"id": 5, "images": 1}) is None
    assert read_prompt({"id": "5"}) is None
    assert read_prompt({"id": 5, "images": ["javascript:alert(1)"]}) is None
    assert read_prompt({"id": 5, "images": [f"https://x/{i}" for i in range(1000)]}) is None
    prompt = read_prompt([{"id": 5, "images": ["https://cdn.test/1.jpg"], "cost_mc": 2**63 - 1,
                           "seed": "nope", "user_error": {"x": "y" * 5000},
                           "created_at": "2026-01-01T00:00:00Z", "trained_at": "garbage"}])
    assert prompt is not None and prompt.images == ("https://cdn.test/1.jpg",)
    assert prompt.cost_mc is None and prompt.seed is None and prompt.trained_at is None
    assert prompt.user_error is not None and len(prompt.user_error) == 1000


def test_a_learnt_generation_time_stays_in_range() -> None:
    job = Job.from_hash("j", {"status": "waiting", "submitted_at": "0"})
    far = read_prompt({"id": 1, "created_at": "2026-01-01T00:00:00Z",
                       "trained_at": "9999-01-01T00:00:00Z"})
    before = read_prompt({"id": 1, "created_at": "2026-01-01T00:00:00Z",
                          "trained_at": "2000-01-01T00:00:00Z"})
    assert far is not None and before is not None
    assert generation_seconds(job, far, 900) == 900
    assert generation_seconds(job, before, 900) == 0
    assert first_poll_delay(S, Lane.NORMAL, 10**9) == S.astria_job_deadline_seconds
