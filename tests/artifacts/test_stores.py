"""Both stores behind one interface: a directory and moto's S3 server, the same behaviour from each."""

from __future__ import annotations

import io
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from artifacts import services
from artifacts.stores import FileStore, StoreError, open_store, parse_store_url


def test_it_puts_lists_opens_measures_and_deletes(any_store: str) -> None:
    store = services.store()
    assert store.kind == any_store
    store.put("vision/1/output/a.txt", io.BytesIO(b"hello"))
    store.put("vision/1/checkpoints/c.bin", io.BytesIO(b"x" * 300))
    store.put("vision/2/output/b.txt", io.BytesIO(b"other job"))
    assert [(f.key, f.size) for f in store.list("vision/1/")] == [
        ("vision/1/checkpoints/c.bin", 300),
        ("vision/1/output/a.txt", 5),
    ]
    assert store.open("vision/1/output/a.txt").read() == b"hello"
    assert store.exists("vision/1/output/a.txt") and not store.exists("vision/1/output/") and not store.exists("vision/1/nope")
    assert store.usage("vision/") == 5 + 300 + 9
    assert store.delete_prefix("vision/1/") == 2
    assert store.list("vision/1/") == [] and store.usage("vision/") == 9
    with pytest.raises(StoreError) as missing:
        store.open("vision/1/output/a.txt")
    assert not missing.value.retryable


def test_s3_hands_out_presigned_urls_that_work(s3_store: Any) -> None:
    store = services.store()
    url = store.upload_url("vision/3/output/up.txt", 4, 60)
    assert url is not None
    urllib.request.urlopen(
        urllib.request.Request(url, data=b"data", method="PUT", headers={"Content-Type": "application/octet-stream"}), timeout=10
    ).close()
    assert [f.size for f in store.list("vision/3/")] == [4]
    listed = s3_store.list_objects_v2(Bucket=s3_store.bucket)["Contents"]
    assert [item["Key"] for item in listed] == ["site/vision/3/output/up.txt"]  # under the configured prefix
    download = store.download_url("vision/3/output/up.txt", 60, "up.txt")
    assert download is not None
    with urllib.request.urlopen(download, timeout=10) as answer:
        assert answer.read() == b"data"


def test_a_path_store_has_no_presigned_urls_and_never_leaves_its_root(file_store: Path) -> None:
    store = services.store()
    assert isinstance(store, FileStore)
    assert store.upload_url("vision/1/output/x", 1, 60) is None and store.download_url("vision/1/output/x", 60, "x") is None
    assert store.location("vision/1/output/") == str(file_store.resolve() / "vision/1/output")
    with pytest.raises(StoreError):
        store.open("../outside")
    (file_store / "vision").mkdir()
    (file_store / "vision" / "escape").symlink_to("/etc")
    with pytest.raises(StoreError):
        store.open("vision/escape/passwd")


def test_the_store_setting_is_parsed_strictly() -> None:
    assert parse_store_url("file:///srv/grid-artifacts") == ("file", "/srv/grid-artifacts", "")
    assert parse_store_url("/mnt/lustre/grid") == ("file", "/mnt/lustre/grid", "")
    assert parse_store_url("s3://bucket/a/b/") == ("s3", "bucket", "a/b")
    for bad, says in [("s3:///nobucket", "needs a bucket"), ("relative/path", "absolute"), ("file://relative", "absolute")]:
        with pytest.raises(StoreError, match=says):
            open_store(bad)
