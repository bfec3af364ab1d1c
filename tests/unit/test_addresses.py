"""Webhook destinations: no internal address in any spelling, at enqueue and at delivery."""

from __future__ import annotations

import socket

import pytest

from worker.errors import DestinationRefused, InvalidSpec
from worker.net.addresses import resolve_checked, resolved_problem, url_host_problem
from worker.spec import parse_spec

REFUSED = [
    "http://127.0.0.1:9/hook", "http://2130706433/", "http://0x7f.1/", "http://0177.0.0.1/",
    "http://127.1/", "http://[::1]/", "http://[::ffff:127.0.0.1]/", "http://[2002:7f00:1::]/",
    "http://[64:ff9b::7f00:1]/", "http://169.254.169.254/latest/meta-data",
    "http://[fe80::1%25eth0]/", "http://10.1.2.3/", "http://172.16.0.1/", "http://192.168.1.1/",
    "http://100.64.0.1/", "http://[fc00::1]/", "http://[fd12::1]/", "http://224.0.0.1/",
    "http://[ff02::1]/", "http://0/", "http://0.0.0.0/", "http://[::]/", "http://localhost/",
    "http://LOCALHOST./", "http://api.localhost/", "http://\uff4c\uff4f\uff43\uff41\uff4c\uff48\uff4f\uff53\uff54/",
]


@pytest.mark.parametrize("url", REFUSED)
def test_an_internal_destination_is_refused_at_enqueue_in_any_spelling(url: str) -> None:
    with pytest.raises(InvalidSpec, match=r"^callback: (.*not public|its host is local)"):
        parse_spec({"tune_id": 1, "text": "x", "callback": url})
    assert parse_spec({"tune_id": 1, "text": "x", "callback": url}, private_callbacks=True)


@pytest.mark.parametrize("url", ["https://hooks.example.com/astria?x=1", "http://93.184.215.14/",
                                 "https://[2606:4700:4700::1111]:8443/hook"])
def test_a_public_destination_is_accepted(url: str) -> None:
    assert url_host_problem(url) is None
    assert parse_spec({"tune_id": 1, "text": "x", "callback": url}).callback == url


def test_credentials_in_a_callback_are_refused() -> None:
    with pytest.raises(InvalidSpec, match="callback: must not carry credentials"):
        parse_spec({"tune_id": 1, "text": "x", "callback": "https://u:p@hooks.example.com/"})


def test_a_name_is_checked_by_what_it_resolves_to() -> None:
    """The machine's own name resolves to a loopback or private address (from /etc/hosts)."""
    name = socket.gethostname()
    assert url_host_problem(f"http://{name}/hook") is None  # no DNS at accept time
    problem = resolved_problem(f"http://{name}/hook")
    assert problem is not None and "which is not public" in problem  # enqueue() resolves it
    with pytest.raises(DestinationRefused, match="which is not public"):
        resolve_checked(name, 80, allow_private=False)  # and so does every delivery
    assert resolve_checked(name, 80, allow_private=True)
    assert resolved_problem("https://nothing.invalid/") is None  # left to the delivery
    with pytest.raises(socket.gaierror):  # not refused: worth a retry
        resolve_checked("nothing.invalid", 443, allow_private=False)
    with pytest.raises(DestinationRefused, match="local name"):
        resolve_checked("localhost", 443, allow_private=False)
