"""AstriaClient against the simulator over real HTTP: auth, retries, typed errors."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
import requests

from astria_local.simulator import AstriaSimulator, SimConfig
from worker.astria.client import AstriaClient, TransientError
from worker.astria.retry import advised_wait, throttled_wait
from worker.errors import AstriaRejected
from worker.settings import Settings


@pytest.fixture
def sim() -> Iterator[AstriaSimulator]:
    with AstriaSimulator(SimConfig(api_key="k", generation_seconds=0, rng_seed=1)) as s:
        yield s


def client(sim: AstriaSimulator, **overrides: object) -> AstriaClient:
    settings = Settings(astria_api_key="k", astria_base_url=sim.url,  # type: ignore[arg-type]
                        astria_retry_initial_delay=0.01, astria_retry_max_delay=0.05,
                        **overrides)
    return AstriaClient(settings)


def knobs(sim: AstriaSimulator, **values: object) -> None:
    requests.post(sim.url + "/_sim/config", json=values, timeout=5).raise_for_status()


def test_create_sends_documented_form_fields_with_bearer_auth(sim: AstriaSimulator) -> None:
    [prompt] = client(sim).create_prompt(7, {"text": "hi", "super_resolution": True, "seed": 3})
    assert prompt.tune_id == 7 and prompt.text == "hi" and prompt.seed == 3
    assert sim.prompts()[0]["super_resolution"] is True


def test_wrong_key_is_rejected_and_not_retried(sim: AstriaSimulator) -> None:
    bad = Settings(astria_api_key="wrong", astria_base_url=sim.url)  # type: ignore[arg-type]
    with pytest.raises(AstriaRejected, match="401"):
        AstriaClient(bad).get_prompt(7, 1)
    assert sim.counters == {}


def test_422_carries_astria_text(sim: AstriaSimulator) -> None:
    with pytest.raises(AstriaRejected) as caught:
        client(sim).create_prompt(7, {"text": ""})
    assert str(caught.value) == "Astria 422: text: can't be blank"


def test_a_request_is_made_once_and_its_failure_classified(sim: AstriaSimulator) -> None:
    [prompt] = client(sim).create_prompt(7, {"text": "hi"})
    knobs(sim, fault_5xx=1.0)
    with pytest.raises(TransientError) as caught:
        client(sim).get_prompt(7, prompt.id)
    assert caught.value.status in (500, 502, 503) and not caught.value.maybe_created
    assert sim.counters["fault_5xx"] == 1  # no retry inside: the policy decides, later


def test_post_is_made_once_and_flags_an_unknown_fate(sim: AstriaSimulator) -> None:
    knobs(sim, fault_504_after_create=1.0)
    with pytest.raises(TransientError) as caught:
        client(sim).create_prompt(7, {"text": "hi"})
    assert caught.value.maybe_created and caught.value.status == 504
    assert sim.counters["created"] == 1


def test_429_on_post_is_known_not_to_have_created(sim: AstriaSimulator) -> None:
    knobs(sim, fault_429=1.0, retry_after=7)
    with pytest.raises(TransientError) as caught:
        client(sim).create_prompt(7, {"text": "hi"})
    assert not caught.value.maybe_created and caught.value.retry_after == 7


@pytest.mark.parametrize(("header", "wait"), [(1e12, 120.0), (-5, 0.0)],
                         ids=["absurdly long", "negative"])
def test_a_hostile_retry_after_on_a_429_is_bounded(sim: AstriaSimulator, header: float,
                                                   wait: float) -> None:
    """A 429 spends no retry budget, so its Retry-After alone decides when the job goes again:
    one of 10^12 s waits ASTRIA_RETRY_MAX_SECONDS (120 s), a negative one not at all."""
    knobs(sim, fault_429=1.0, retry_after=header)
    with pytest.raises(TransientError) as caught:
        client(sim).create_prompt(7, {"text": "hi"})
    assert throttled_wait(Settings(astria_api_key="k"), caught.value) == wait  # type: ignore[arg-type]


def test_listing_is_newest_first_with_cursor(sim: AstriaSimulator) -> None:
    c = client(sim)
    ids = [c.create_prompt(7, {"text": f"p{i}"})[0].id for i in range(5)]
    page = c.list_prompts(7, limit=2)
    assert [p.id for p in page] == ids[::-1][:2]
    assert [p.id for p in c.list_prompts(7, limit=2, before_id=page[-1].id)] == [
        ids[2], ids[1]]


def test_delete_removes_the_prompt_and_a_missing_one_counts_as_deleted(
    sim: AstriaSimulator,
) -> None:
    c = client(sim)
    [prompt] = c.create_prompt(7, {"text": "to delete"})
    c.delete_prompt(7, prompt.id)
    c.delete_prompt(7, prompt.id)
    assert sim.counters["deleted"] == 1
    with pytest.raises(AstriaRejected, match="404"):
        c.get_prompt(7, prompt.id)


def test_account_rate_limit_answers_429_with_retry_after(sim: AstriaSimulator) -> None:
    knobs(sim, rate_limit=1.0, rate_limit_burst=1.0, rate_limit_methods="POST")
    c = client(sim)
    c.create_prompt(7, {"text": "first"})
    with pytest.raises(TransientError) as caught:
        c.create_prompt(7, {"text": "second"})
    assert caught.value.status == 429 and caught.value.retry_after == 1
    c.list_prompts(7)  # GETs are not counted by a POST-only limit


def test_a_post_answered_with_several_prompts_gives_them_all(sim: AstriaSimulator) -> None:
    knobs(sim, list_answer_tunes={"9": 3})
    prompts = client(sim).create_prompt(9, {"text": "partner model"})
    assert len(prompts) == 3 and len({p.id for p in prompts}) == 3


def test_a_post_answered_with_more_prompts_than_any_partner_model_makes_is_not_trusted(
        sim: AstriaSimulator) -> None:
    """17 prompts (MAX_PROMPTS is 16) is no answer to act on: the POST may have created
    something, so the job goes to the listing instead of being decided from the body."""
    knobs(sim, list_answer_tunes={"9": 17})
    with pytest.raises(TransientError) as caught:
        client(sim).create_prompt(9, {"text": "partner model"})
    assert caught.value.maybe_created and "not a prompt object or a list" in str(caught.value)


def test_a_connection_that_never_sent_anything_is_known_not_to_have_created() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = Settings(astria_api_key="k",  # type: ignore[arg-type]
                        astria_base_url=f"http://127.0.0.1:{port}")
    with pytest.raises(TransientError) as caught:
        AstriaClient(settings).create_prompt(7, {"text": "hi"})
    assert caught.value.not_sent and not caught.value.maybe_created


def test_a_500_asks_for_thirty_seconds(sim: AstriaSimulator) -> None:
    knobs(sim, fault_5xx=1.0)
    for _ in range(20):
        with pytest.raises(TransientError) as caught:
            client(sim).list_prompts(7)
        if caught.value.status == 500:
            assert advised_wait(caught.value) == 30.0
            return
    pytest.fail("no 500 among 20 answers")
