"""The files operators run (compose, Procfile, Dockerfile, Prometheus, Grafana, the schema) agree
with the code. (No Docker engine runs here: the files are checked, not started.)"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml

from worker.edge.api import create_app
from worker.runtime import Runtime
from worker.settings import Settings
from worker.spec import spec_json_schema

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"])


def compose(name: str = "docker-compose.yml") -> dict:  # type: ignore[type-arg]
    return yaml.safe_load((ROOT / name).read_text())  # type: ignore[no-any-return]


def procfile() -> dict[str, list[str]]:
    return {name: shlex.split(command) for name, command in (
        line.split(": ", 1) for line in (ROOT / "Procfile").read_text().splitlines()
        if line.strip())}


def test_compose_runs_what_the_procfile_runs() -> None:
    services = compose()["services"]
    assert {"redis", "worker", "callbacks", "flower", "simulator", "prometheus",
            "grafana"} <= set(services)
    assert "--appendonly yes" in " ".join(services["redis"]["command"])
    assert "ports" not in services["worker"]  # so that --scale worker=N works
    for name, command in procfile().items():
        expanded = [re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", word) for word in command]
        assert services[name]["command"] == expanded, name
    assert services["simulator"]["profiles"] == ["local"]
    assert services["simulator"]["build"]["target"] == "local"
    assert services["simulator"]["command"][:2] == ["astria-queue", "simulator"]
    env = services["worker"]["environment"]
    known = {name.upper() for name in Settings.model_fields}
    assert set(env) <= known, set(env) - known


def test_the_procfile_uses_standard_commands() -> None:
    commands = procfile()
    assert set(commands) == {"worker", "callbacks", "flower", "api"}
    assert commands["api"] == ["astria-queue", "api"]
    assert commands["worker"][:4] == ["celery", "-A", "worker", "worker"]
    assert commands["callbacks"][:3] == ["gunicorn", "-c", "python:worker.edge.gunicorn_conf"]
    assert commands["callbacks"][3] == "worker.edge.receiver:app"


def test_compose_fails_fast_and_keeps_admin_uis_on_this_host() -> None:
    services = compose()["services"]
    assert ":?" in services["worker"]["environment"]["ASTRIA_API_KEY"]  # no silent default key
    assert "noeviction" in services["redis"]["command"]
    assert services["worker"]["stop_grace_period"] == "60s"
    for name in ("flower", "prometheus", "grafana", "api"):
        assert all(port.startswith("127.0.0.1:") for port in services[name]["ports"]), name
    assert "healthcheck" in services["callbacks"] and "healthcheck" in services["api"]


def test_the_image_starts_the_recommended_worker_and_leaves_local_tools_out() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "USER 10001" in dockerfile and "HEALTHCHECK" in dockerfile
    assert dockerfile.index("COPY worker") > dockerfile.index("-c constraints.txt")
    assert ".git" in (ROOT / ".dockerignore").read_text().split()
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", dockerfile, re.M).group(1))  # type: ignore[union-attr]
    assert cmd == procfile()["worker"]
    runtime = dockerfile.split("AS local")[0]
    assert "astria_local" not in runtime


def test_prometheus_scrapes_the_receiver_and_the_dashboard_uses_real_metrics() -> None:
    scrape = yaml.safe_load((ROOT / "deploy/prometheus.yml").read_text())["scrape_configs"][0]
    assert scrape["metrics_path"] == "/metrics"
    assert scrape["static_configs"][0]["targets"] == ["callbacks:8080"]
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/astria-queue.json").read_text())
    exported = set(re.findall(r'"(astria_queue_\w+)"',
                              (ROOT / "worker/edge/metrics.py").read_text()))
    assert {v["name"] for v in dashboard["templating"]["list"]} == {"datasource", "lane",
                                                                     "tenant"}
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}"  # no hard-coded datasource
        for target in panel["targets"]:
            # every pod exports the same figures: each expression keeps one copy of a series
            assert "max without (instance, pod)" in target["expr"], target["expr"]
            for name in re.findall(r"astria_queue_\w+", target["expr"]):
                base = re.sub(r"_(total|bucket|sum|count)$", "", name)
                assert base in exported, name


def test_compose_defaults_are_a_valid_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each `${X:-default}` as compose gives it when X is unset (an empty one is unset)."""
    for name, value in compose()["services"]["api"]["environment"].items():
        value = re.sub(r"\$\{\w+:\?[^}]*\}", "sim-key", str(value))  # required: given
        monkeypatch.setenv(name, re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value))
    settings = Settings()
    assert settings.api_host == "0.0.0.0" and settings.tenants_file is None
    assert settings.astria_callback_url is None


def test_committed_schemas_are_current() -> None:
    committed = json.loads((ROOT / "schema" / "prompt-spec.schema.json").read_text())
    assert committed == spec_json_schema()
    openapi = json.loads((ROOT / "schema" / "openapi.json").read_text())
    assert openapi == create_app(Runtime(Settings())).openapi()  # astria-queue openapi
    assert committed["additionalProperties"] is False
    assert committed["properties"]["num_images"]["anyOf"][0]["maximum"] == 8


def test_the_sentinel_variant_reaches_redis_through_three_sentinels() -> None:
    from worker.store.connections import sentinel_hosts

    override = compose("docker-compose.sentinel.yml")["services"]
    env = override["worker"]["environment"]
    hosts, db, _ = sentinel_hosts(env["REDIS_URL"])
    assert hosts == [(f"sentinel-{i}", 26379) for i in (1, 2, 3)] and db == 0
    # each Sentinel's learnt state (the current master) survives its restart, on its own volume
    volumes = [override[f"sentinel-{i}"]["volumes"][0] for i in (1, 2, 3)]
    assert len(set(volumes)) == 3 and all(v.endswith(":/data") for v in volumes)
    assert "[ -f /data/sentinel.conf ] ||" in override["sentinel-1"]["command"]
    assert Settings(redis_url=env["REDIS_URL"],
                    redis_sentinel_master=env["REDIS_SENTINEL_MASTER"]).wait_replicas == 1
    assert override["callbacks"]["environment"] == env == override["flower"]["environment"]
    assert "--replicaof" in override["redis-replica"]["command"]


def test_the_floors_file_pins_every_floor_of_pyproject() -> None:
    """tests/test_floors.py installs constraints-floors.txt: it must be pyproject's floors."""

    def version(text: str) -> tuple[int, ...]:
        parts = [int(p) for p in text.split(".")]
        return tuple(parts + [0] * (3 - len(parts)))

    floors = {}
    for dependency in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
            "dependencies"]:
        if match := re.fullmatch(r"([A-Za-z0-9_.-]+)(\[[^]]*\])?>=([0-9.]+)(,.*)?", dependency):
            floors[match[1].lower()] = version(match[3])
    pinned = {name.lower(): version(pin) for line in
              (ROOT / "constraints-floors.txt").read_text().splitlines()
              if line and not line.startswith("#") for name, pin in [line.split("==")]}
    assert pinned == floors
