"""Tenants as configuration (TENANTS_FILE, worker/tenants.py): who may enqueue what, whose turns
weigh what, whose webhooks are signed with which secret; a bad file fails fast naming the
field."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from standardwebhooks import Webhook

from tests.unit.conftest import Store
from worker.edge.metrics import named_tenants
from worker.errors import ConfigError
from worker.flow.accept import accept
from worker.flow.webhooks import signed_headers
from worker.records import Failed, JobState
from worker.runtime import Runtime
from worker.store.types import Ending

OLD, NEW = "whsec_" + "A" * 24, "whsec_" + "B" * 24
TOKEN = "tok-app-secret"


def registry(tmp_path: Path, name: str = "tenants.json", **app: Any) -> Path:
    tenants = {"app": {"token_sha256": [hashlib.sha256(TOKEN.encode()).hexdigest()],
                       "webhook_secret": [NEW, OLD], "weight": 3, "max_in_flight": 50,
                       "tune_ids": [4242], **app},
               "bulk": {}}
    path = tmp_path / name
    text = (yaml.safe_dump({"tenants": tenants}) if name.endswith(".yaml")
            else json.dumps({"tenants": tenants}))
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", ["tenants.json", "tenants.yaml"])
def test_a_registry_gives_tokens_turns_caps_and_secrets(make_store: Any, tmp_path: Path,
                                                       name: str) -> None:
    store: Store = make_store(tenants_file=registry(tmp_path, name), webhook_secret=OLD,
                              tenant_weights={"other": 9})
    s = store.settings
    assert s.tenants.for_token(TOKEN) == "app" and s.tenants.for_token("guess") is None
    assert s.turn_weights() == {"app": 3, "bulk": 1}  # the file's, not TENANT_WEIGHTS
    assert s.turn_caps() == {"app": 50}  # bulk: TENANT_DEFAULT_MAX_IN_FLIGHT
    assert s.webhook_keys("app") == [NEW, OLD]
    assert s.webhook_keys("bulk") == [OLD]  # registered, no secret of its own: WEBHOOK_SECRET
    assert s.webhook_keys("stranger") == []  # never signed with anyone's secret
    assert s.storage_url_for("app") is None and not s.copies_on


def test_a_tenant_may_have_its_own_store_for_durable_copies(make_store: Any,
                                                            tmp_path: Path) -> None:
    store: Store = make_store(tenants_file=registry(tmp_path, storage_url="s3://app-images/x"),
                              storage_url=f"file://{tmp_path}/shared")
    s = store.settings
    assert s.copies_on and s.storage_url_for("app") == "s3://app-images/x"
    assert s.storage_url_for("bulk") == f"file://{tmp_path}/shared"
    assert Runtime(s).storage("bulk").put("k", b"x", "image/jpeg").url.startswith("file://")


def test_a_job_the_registry_does_not_allow_is_refused_naming_the_field(
        make_store: Any, tmp_path: Path) -> None:
    store: Store = make_store(tenants_file=registry(tmp_path))
    rt = Runtime(store.settings)
    cases = {"stranger": ({"tenant": "mallory", "tune_id": 4242}, "tenant: 'mallory' is not"),
             "tune": ({"tenant": "app", "tune_id": 1}, "tune_id: 1 is not one of tenant 'app'"),
             "ok": ({"tenant": "app", "tune_id": 4242}, None),
             "any_tune": ({"tenant": "bulk", "tune_id": 1}, None)}
    for name, (spec, refused) in cases.items():
        accept(rt, store.jid(name), (), {"spec": {"text": "a cat", **spec}})
        job = store.jobs.load(store.jid(name))
        if refused is None:
            assert job.status is JobState.QUEUED, name
        else:
            assert isinstance(job.outcome, Failed) and job.outcome.error == "InvalidSpec"
            assert refused in job.outcome.message, job.outcome.message
    assert sorted(store.grant()) == ["any_tune", "ok"]  # nothing of the refused ones is queued


def test_a_rotated_secret_signs_with_both_and_either_verifies() -> None:
    headers = signed_headers([NEW, OLD], "msg_1", b'{"a":1}')
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (NEW, OLD):
        assert Webhook(secret).verify(b'{"a":1}', headers) == {"a": 1}


@pytest.mark.parametrize(("tenants", "named"), [
    ({"app": {"weight": -1}}, "tenants.app.weight"),
    ({"app": {"token_sha256": ["not-a-hash"]}}, "tenants.app.token_sha256.0"),
    ({"app": {"webhook_secret": "plain"}}, "tenants.app.webhook_secret"),
    ({"app": {"tokens": []}}, "tenants.app.tokens"),
    ({"app": {"storage_url": "ftp://x/y"}}, "tenants.app.storage_url"),
    ({"bad name!": {}}, "tenants.bad name!"),
    ({"a": {"token_sha256": ["0" * 64]}, "b": {"token_sha256": ["0" * 64]}}, "tenants.b"),
    ({}, "names no tenant"),
])
def test_a_bad_registry_fails_at_start_naming_the_field(make_store: Any, tmp_path: Path,
                                                        tenants: Any, named: str) -> None:
    path = tmp_path / "tenants.json"
    path.write_text(json.dumps({"tenants": tenants}))
    with pytest.raises(ConfigError, match="TENANTS_FILE") as caught:
        make_store(tenants_file=path)
    assert named in str(caught.value)
    assert "plain" not in str(caught.value)  # a secret, even a bad one, never reaches an error


def test_a_file_that_is_not_json_or_is_missing_fails_at_start(make_store: Any,
                                                              tmp_path: Path) -> None:
    for path in (tmp_path / "missing.json", tmp_path / "junk.json"):
        if path.name == "junk.json":
            path.write_text("{not json")
        with pytest.raises(ConfigError, match=path.name):
            make_store(tenants_file=path)


def test_a_webhook_knows_its_jobs_tenant_so_it_is_signed_with_its_secret(
        make_store: Any, tmp_path: Path) -> None:
    store: Store = make_store(tenants_file=registry(tmp_path))
    store.register("a", tenant="app", tune_id=4242, callback="https://hooks.example.com/x")
    assert store.grant() == {"a": "submit"}
    lease, job = store.lease("a")
    store.jobs.finish([Ending(lease, job, Failed("PromptFailed", "x"))])
    [message] = store.grant_webhooks()
    hook = store.webhooks.load(message)
    assert hook is not None and hook.tenant == "app"
    assert store.settings.webhook_keys(hook.tenant) == [NEW, OLD]


def test_the_tenant_label_of_the_metrics_is_bounded(make_store: Any, tmp_path: Path) -> None:
    counters = {f"t|t{i}|normal|enqueued": float(i) for i in range(10)}
    assert named_tenants(make_store(metrics_max_tenants=3).settings, counters) == {
        "t9", "t8", "t7"}  # the busiest; the rest are counted as "other"
    registered = make_store(tenants_file=registry(tmp_path)).settings
    assert named_tenants(registered, counters) == {"app", "bulk"}
