"""A service that runs a Celery of its own imports us to enqueue: nothing of ours may reach its
app, its workers, its control commands or its logging."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = textwrap.dedent("""
    import logging
    from celery import Celery, current_app, signals
    from celery.worker import control

    host = Celery("host-service", set_as_current=True)
    revoke = control.Panel.data["revoke"]
    handlers = {name: len(getattr(signals, name).receivers or [])
                for name in ("worker_init", "worker_process_init", "worker_process_shutdown",
                             "after_setup_logger", "after_setup_task_logger", "task_revoked")}

    import worker
    from worker import enqueue, outcome, cancel

    assert current_app._get_current_object() is host, current_app
    assert control.Panel.data["revoke"] is revoke, "the revoke command was replaced"
    after = {name: len(getattr(signals, name).receivers or []) for name in handlers}
    assert after == handlers, (handlers, after)
    assert "astria.submit_prompt" not in host.tasks
    assert worker.app.steps["worker"] and not host.steps["worker"]
    print("clean")
""")


def test_importing_the_producer_api_touches_nothing_of_the_host() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 0 and done.stdout.strip() == "clean", done.stderr
