"""Where durable copies go (worker.net.storage) and their keys (worker.flow.copies): the same
object for every attempt, kept when it is there whole, and never outside the directory."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from worker.flow.copies import object_key
from worker.net.storage import FileStorage, open_storage


def test_an_objects_key_is_the_same_for_every_attempt_and_stays_in_its_place() -> None:
    url = "https://cdn.astria.test/abc/1.JPG?x=1"
    assert object_key("app", "job-1", 0, url) == object_key("app", "job-1", 0, url) == (
        "app/job-1/0.jpg")
    assert object_key("app", "../../etc", 2, "https://x.test/i") == "app/%2E%2E%2F%2E%2E%2Fetc/2"
    assert object_key("app", "j", 1, "https://x.test/i.exe") == "app/j/1"


def test_a_directory_keeps_whole_objects_with_their_sha256(tmp_path: Path) -> None:
    store = open_storage(f"file://{tmp_path}/copies", None, 60)
    assert isinstance(store, FileStorage) and store.find("app/j/0.jpg") is None
    put = store.put("app/j/0.jpg", b"image bytes", "image/jpeg")
    assert put == store.find("app/j/0.jpg")
    assert put.sha256 == hashlib.sha256(b"image bytes").hexdigest() and put.bytes == 11
    assert put.url == (tmp_path / "copies" / "app/j/0.jpg").as_uri()
    (tmp_path / "copies" / "app/j/1.jpg").write_bytes(b"half")  # a crash before its sha256
    assert store.find("app/j/1.jpg") is None  # not whole: written again
    with pytest.raises(ValueError, match="leaves the storage directory"):
        store.put("../outside", b"x", "image/jpeg")


def test_an_image_on_an_internal_address_is_not_fetched() -> None:
    from worker.flow.copies import CopyFailed, download

    with pytest.raises(CopyFailed, match="not public"):
        download("http://127.0.0.1:9/_sim/images/1/0.jpg", 1024, allow_private=False,
                 astria="https://api.astria.ai")
    with pytest.raises(CopyFailed, match=r"127\.0\.0\.1:9: ConnectionError"):  # its own host
        download("http://127.0.0.1:9/_sim/images/1/0.jpg", 1024, allow_private=False,
                 astria="http://127.0.0.1:9")
