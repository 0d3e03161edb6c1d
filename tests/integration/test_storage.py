"""The ObjectStore contract, checked on a local directory and on a real S3 API server (SeaweedFS)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr

from shared.errors import ObjectNotFound, PreconditionFailed, StorageUnavailable
from shared.index.storage import ObjectStore, S3Store, open_store
from tests.integration.conftest import S3Server, closed_port


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest) -> ObjectStore:
    """Each contract test runs once per store kind."""
    chosen: ObjectStore = request.getfixturevalue(f"{request.param}_store")
    return chosen


@pytest.fixture
def open_s3(s3_server: S3Server, s3_bucket: str) -> Iterator[Callable[..., S3Store]]:
    """Build S3 stores on the test's bucket with some settings overridden; closes their clients afterwards."""
    made: list[S3Store] = []

    def make(**overrides: object) -> S3Store:
        built = open_store(s3_server.settings(s3_bucket, **overrides))
        assert isinstance(built, S3Store)
        made.append(built)
        return built

    yield make
    for built in made:
        built.client.close()


# --- put / get ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [b"", bytes(range(256)) * 16, b"\x00\r\n\xff" * 3, os.urandom(1 << 20)],
    ids=["empty", "every-byte", "line-endings", "1MiB-random"],
)
def test_get_returns_exactly_the_bytes_put(store: ObjectStore, data: bytes) -> None:
    store.put("docs/blob.bin", data)
    assert store.get("docs/blob.bin") == data


@pytest.mark.parametrize("size", [0, 3 << 20], ids=["empty", "3MiB"])
def test_download_streams_the_object_into_a_file(store: ObjectStore, tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    store.put("docs/texts.bin", data)
    target = tmp_path / "copy.bin"
    target.write_bytes(b"older content")
    store.download("docs/texts.bin", target)
    assert target.read_bytes() == data


def test_a_download_is_a_copy_apart_from_the_object(store: ObjectStore, tmp_path: Path) -> None:
    store.put("segments/s1/index.faiss", b"stored bytes")
    target = tmp_path / "index.faiss"
    store.download("segments/s1/index.faiss", target)
    with target.open("r+b") as fh:  # damaged in place
        fh.write(b"XX")
    assert store.get("segments/s1/index.faiss") == b"stored bytes"


def test_download_of_a_missing_object_is_not_found(store: ObjectStore, tmp_path: Path) -> None:
    with pytest.raises(ObjectNotFound):
        store.download("docs/nothing.bin", tmp_path / "copy.bin")


@pytest.mark.parametrize("size", [0, 3 << 20], ids=["empty", "3MiB"])
def test_put_file_stores_exactly_the_file_bytes(store: ObjectStore, tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    source = tmp_path / "index.faiss"
    source.write_bytes(data)
    store.put("segments/s1/index.faiss", b"older content")
    store.put_file("segments/s1/index.faiss", source)
    assert store.get("segments/s1/index.faiss") == data
    assert list(store.list("segments/")) == ["segments/s1/index.faiss"]  # no temporary files left behind


def test_put_file_of_a_missing_file_is_unavailable_and_stores_nothing(store: ObjectStore, tmp_path: Path) -> None:
    with pytest.raises(StorageUnavailable):
        store.put_file("segments/s1/index.faiss", tmp_path / "gone.faiss")
    assert not store.exists("segments/s1/index.faiss")


def test_put_overwrites_an_existing_object(store: ObjectStore) -> None:
    store.put("k", b"first")
    store.put("k", b"second")
    assert store.get("k") == b"second"


def test_put_if_absent_creates_a_new_object(store: ObjectStore) -> None:
    store.put("manifests/v1.json", b"{}", if_absent=True)
    assert store.get("manifests/v1.json") == b"{}"


def test_put_if_absent_on_an_existing_key_fails_and_keeps_the_original(store: ObjectStore) -> None:
    store.put("manifests/v1.json", b"original")
    with pytest.raises(PreconditionFailed):
        store.put("manifests/v1.json", b"intruder", if_absent=True)
    assert store.get("manifests/v1.json") == b"original"


def test_concurrent_if_absent_puts_have_exactly_one_winner(store: ObjectStore) -> None:
    threads = 8
    barrier = threading.Barrier(threads)
    winners: list[int] = []
    losers: list[int] = []
    unexpected: list[BaseException] = []

    def race(i: int) -> None:
        barrier.wait()
        try:
            store.put("race/LATEST", f"writer-{i}".encode(), if_absent=True)
        except PreconditionFailed:
            losers.append(i)
        except BaseException as exc:
            unexpected.append(exc)
        else:
            winners.append(i)

    workers = [threading.Thread(target=race, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=30)
    assert not unexpected
    assert len(winners) == 1, f"winners: {winners}"
    assert len(losers) == threads - 1
    assert store.get("race/LATEST") == f"writer-{winners[0]}".encode()
    assert list(store.list("race/")) == ["race/LATEST"]  # no temporary files left behind


# --- missing objects, exists, delete -----------------------------------------------------------


def test_get_of_a_missing_key_raises_object_not_found(store: ObjectStore) -> None:
    with pytest.raises(ObjectNotFound):
        store.get("no/such/key")


def test_exists_is_true_only_while_the_object_is_stored(store: ObjectStore) -> None:
    assert not store.exists("a/b")
    store.put("a/b", b"x")
    assert store.exists("a/b")
    store.delete("a/b")
    assert not store.exists("a/b")


def test_delete_removes_the_object_and_is_idempotent(store: ObjectStore) -> None:
    store.put("a/b", b"x")
    store.delete("a/b")
    store.delete("a/b")
    store.delete("never/stored")
    with pytest.raises(ObjectNotFound):
        store.get("a/b")


def test_a_key_that_only_prefixes_other_keys_is_not_an_object(store: ObjectStore) -> None:
    store.put("t/a/b", b"x")
    for phantom in ("t", "t/a", "t/a/b/c"):  # "directories" above the object, and a key below it
        assert not store.exists(phantom)
        with pytest.raises(ObjectNotFound):
            store.get(phantom)
        store.delete(phantom)
    assert store.get("t/a/b") == b"x"


# --- list --------------------------------------------------------------------------------------

# Ordered so that S3's lexicographic listing differs from a directory walk ("-" and "." sort before "/").
# No key is also a "directory" of another key: a LocalStore cannot hold both "a/b" and "a/b/c".
LIST_KEYS = ["a/b-x", "a/b.z", "a/b/c", "a/b/d/e", "a/b0", "a/bc", "a/é", "ab", "b/a", "za/b"]


@pytest.mark.parametrize("prefix", ["", "a", "a/", "a/b", "a/b/", "a/b/d", "ab", "b/", "zz/"])
def test_list_yields_exactly_the_keys_under_the_prefix_in_order(store: ObjectStore, prefix: str) -> None:
    for key in LIST_KEYS:
        store.put(key, key.encode())
    expected = sorted(k for k in LIST_KEYS if k.startswith(prefix))
    assert list(store.list(prefix)) == expected


def test_scan_gives_each_listed_object_its_size_and_modification_time(store: ObjectStore) -> None:
    before = datetime.now(UTC) - timedelta(minutes=5)  # S3 servers stamp with their own clock (seconds)
    for key in ("s/a", "s/b/c", "t"):
        store.put(key, key.encode() * 3)
    found = list(store.scan("s/"))
    assert [(o.key, o.size) for o in found] == [("s/a", 9), ("s/b/c", 15)]
    assert all(before < o.modified < datetime.now(UTC) + timedelta(minutes=5) for o in found)
    assert [o.key for o in found] == list(store.list("s/"))


@pytest.mark.parametrize("prefix", ["/", "/a/", "a//", "./a/", "../", "a/../a/", "a/./b"])
def test_list_of_a_prefix_no_valid_key_can_start_with_is_empty(store: ObjectStore, prefix: str) -> None:
    for key in LIST_KEYS:
        store.put(key, b"x")
    assert list(store.list(prefix)) == []


# --- keys, ping --------------------------------------------------------------------------------

OPERATIONS: dict[str, Callable[[ObjectStore, str], object]] = {
    "put": lambda s, k: s.put(k, b"x"),
    "put-if-absent": lambda s, k: s.put(k, b"x", if_absent=True),
    "get": lambda s, k: s.get(k),
    "exists": lambda s, k: s.exists(k),
    "delete": lambda s, k: s.delete(k),
}


@pytest.mark.parametrize("key", ["", "/a", "a/../b", "a//b", "a/", "./a", ".."])
def test_invalid_keys_are_rejected_by_every_operation(store: ObjectStore, key: str) -> None:
    for name, operation in OPERATIONS.items():
        try:
            operation(store, key)
        except ValueError as exc:
            assert "invalid object key" in str(exc)
        else:
            pytest.fail(f"{name}({key!r}) accepted an invalid key")


def test_ping_succeeds_on_a_usable_store(store: ObjectStore) -> None:
    store.ping()


# --- S3 only -----------------------------------------------------------------------------------


def test_s3_wrong_credentials_raise_storage_unavailable(open_s3: Callable[..., S3Store]) -> None:
    open_s3().put("k", b"x")
    impostor = open_s3(s3_secret_access_key=SecretStr("not-the-secret"))
    with pytest.raises(StorageUnavailable):
        impostor.ping()
    with pytest.raises(StorageUnavailable):
        impostor.get("k")
    with pytest.raises(StorageUnavailable):
        impostor.put("k2", b"x")
    with pytest.raises(StorageUnavailable):  # never "absent": the store could not answer
        impostor.exists("k")
    with pytest.raises(StorageUnavailable):
        list(impostor.list(""))


def test_s3_unreachable_endpoint_raises_storage_unavailable(open_s3: Callable[..., S3Store]) -> None:
    unreachable = open_s3(s3_endpoint_url=f"http://127.0.0.1:{closed_port()}")
    with pytest.raises(StorageUnavailable):
        unreachable.ping()
    with pytest.raises(StorageUnavailable):
        unreachable.get("k")


def test_s3_missing_bucket_raises_storage_unavailable(open_s3: Callable[..., S3Store]) -> None:
    nowhere = open_s3(s3_bucket="semaflow-no-such-bucket")
    with pytest.raises(StorageUnavailable):
        nowhere.ping()
    with pytest.raises(StorageUnavailable):
        nowhere.get("k")
    with pytest.raises(StorageUnavailable):
        list(nowhere.list(""))


def test_s3_prefix_keeps_keys_under_it_and_list_strips_it(
    s3_server: S3Server, s3_bucket: str, open_s3: Callable[..., S3Store]
) -> None:
    whole_bucket = open_s3()
    tenant = open_s3(s3_prefix="/deploy/one/")  # slashes around the prefix are normalised
    tenant.put("c/1", b"one")
    tenant.put("c/2", b"two")
    whole_bucket.put("deploy/one-other", b"outside")  # shares the prefix's characters, not its folder
    whole_bucket.put("c/1", b"unprefixed")

    raw = s3_server.client.list_objects_v2(Bucket=s3_bucket).get("Contents", [])
    assert sorted(obj["Key"] for obj in raw) == ["c/1", "deploy/one-other", "deploy/one/c/1", "deploy/one/c/2"]
    assert list(tenant.list("")) == ["c/1", "c/2"]
    assert list(tenant.list("c/")) == ["c/1", "c/2"]
    assert tenant.get("c/1") == b"one"
    assert whole_bucket.get("deploy/one/c/2") == b"two"
    tenant.delete("c/1")
    assert whole_bucket.get("c/1") == b"unprefixed"
    assert not whole_bucket.exists("deploy/one/c/1")
