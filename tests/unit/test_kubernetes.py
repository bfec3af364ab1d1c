"""The Kubernetes manifests (deploy/kubernetes): every overlay renders with `kubectl kustomize`
and validates against the Kubernetes schemas (kubernetes-validate, strict: no unknown field);
the resources of other projects' CRDs (KEDA, the Prometheus operator) are checked for what we
rely on, and the alert rules with `promtool check rules`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
OVERLAYS = sorted(p.name for p in (ROOT / "deploy/kubernetes/overlays").iterdir())
KUBERNETES = "1.32.0"
CRDS = {"ScaledObject", "ServiceMonitor", "PrometheusRule"}


def rendered(overlay: str) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    out = subprocess.run([kubectl, "kustomize", str(ROOT / "deploy/kubernetes/overlays" / overlay)],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_overlay_renders_and_validates(overlay: str) -> None:
    docs = rendered(overlay)
    for doc in docs:
        if doc["kind"] not in CRDS:
            kubernetes_validate.validate(doc, KUBERNETES, strict=True)
    pods = [d["spec"]["template"]["spec"] for d in docs if d["kind"] == "Deployment"]
    assert len(pods) == 3
    for pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] > 0
        for container in pod["containers"]:
            assert container["securityContext"]["readOnlyRootFilesystem"]
            assert container["readinessProbe"]["exec"]["command"][-2:] == ["probe", "ready"]
            assert "requests" in container["resources"]
    worker = next(d for d in docs if d["metadata"]["name"] == "astria-queue-worker"
                  and d["kind"] == "Deployment")["spec"]["template"]["spec"]
    assert worker["terminationGracePeriodSeconds"] > 45  # ASTRIA_READ_TIMEOUT: a POST ends
    assert worker["containers"][0]["livenessProbe"]["exec"]["command"][-1] == "alive"
    assert {d["metadata"]["name"] for d in docs if d["kind"] == "PodDisruptionBudget"} == {
        "astria-queue-worker", "astria-queue-receiver", "astria-queue-api"}


def test_the_alert_rules_pass_promtool(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian: apt install prometheus)")
    [rule] = [d for d in rendered("production") if d["kind"] == "PrometheusRule"]
    rules = tmp_path / "rules.yml"
    rules.write_text(yaml.safe_dump(rule["spec"]))
    checked = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True,
                             text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    alerts = {r["alert"] for group in rule["spec"]["groups"] for r in group["rules"]}
    assert alerts == {"AstriaQueueBacklogOld", "AstriaQueueDeadLetters", "AstriaQueueDeadWebhooks",
                      "AstriaQueueThrottled", "AstriaQueueNoOutcomes", "AstriaQueueEngineStale"}


def test_autoscaling_follows_the_real_backlog_not_the_broker_list() -> None:
    [scaled] = [d for d in rendered("production") if d["kind"] == "ScaledObject"]
    [trigger] = scaled["spec"]["triggers"]
    assert 'astria_queue_jobs_current{state="queued"}' in trigger["metadata"]["query"]
    assert scaled["spec"]["scaleTargetRef"]["name"] == "astria-queue-worker"
    assert scaled["spec"]["minReplicaCount"] == 2
