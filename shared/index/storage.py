"""Object storage: one small protocol, a local-directory store and an S3 store (any S3 API).

Calls are blocking; async callers run them in a thread. Keys are ``/``-separated and relative.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

from shared.errors import ConfigurationError, ObjectNotFound, PreconditionFailed, StorageUnavailable

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from shared.config import Settings


_CHUNK = 1 << 20  # bytes copied at a time by ``download`` and ``put_file``


@dataclass(frozen=True, slots=True)
class StoredObject:
    """An object's key, size in bytes and last modification time (UTC)."""

    key: str
    size: int
    modified: datetime


class ObjectStore(Protocol):
    """What semaflow needs from object storage."""

    def put(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        """Store ``data`` durably under ``key``.

        Raises:
            PreconditionFailed: ``if_absent`` and the key already exists.
            StorageUnavailable: the store could not be reached.
        """
        ...

    def put_file(self, key: str, path: Path) -> None:
        """Store the file ``path``'s bytes durably under ``key``, streamed: a large object never sits in memory whole.

        Raises:
            StorageUnavailable: the store could not be reached, or the file could not be read.
        """
        ...

    def get(self, key: str) -> bytes:
        """Return the object's bytes.

        Raises:
            ObjectNotFound: no object under ``key``.
            StorageUnavailable: the store could not be reached.
        """
        ...

    def download(self, key: str, path: Path) -> None:
        """Copy the object into the file ``path`` (created or replaced), streamed: a large object never
        sits in memory whole.

        Raises:
            ObjectNotFound: no object under ``key``.
            StorageUnavailable: the store could not be reached.
        """
        ...

    def exists(self, key: str) -> bool:
        """Whether an object is stored under ``key``."""
        ...

    def delete(self, key: str) -> None:
        """Remove the object; removing a missing key is not an error."""
        ...

    def list(self, prefix: str) -> Iterator[str]:
        """Yield every key that starts with ``prefix``, in lexicographic order."""
        ...

    def scan(self, prefix: str) -> Iterator[StoredObject]:
        """Like :meth:`list`, with each object's size and modification time (cleanup's and statistics' view)."""
        ...

    def ping(self) -> None:
        """Check the store is reachable.

        Raises:
            StorageUnavailable: it is not.
        """
        ...


def _check_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"invalid object key {key!r}")
    return key


def _could_prefix_a_key(prefix: str) -> bool:
    """Whether some valid key starts with ``prefix``: every segment before its last ``/`` must be valid."""
    if "/" not in prefix:
        return True
    try:
        _check_key(prefix.rsplit("/", 1)[0])
    except ValueError:
        return False
    return True


class LocalStore:
    """Objects as files under a root directory; writes are atomic and fsync'ed."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def put(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        """Write to a temporary file, fsync, then rename (or hard-link when ``if_absent``) into place."""
        self._write(key, lambda fh: fh.write(data), if_absent=if_absent)

    def put_file(self, key: str, path: Path) -> None:
        """Copy the file in chunks to a temporary file, fsync, then rename into place."""

        def copy(fh: BinaryIO) -> None:
            with path.open("rb") as src:
                shutil.copyfileobj(src, fh, _CHUNK)

        self._write(key, copy, if_absent=False)

    def _write(self, key: str, fill: Callable[[BinaryIO], object], *, if_absent: bool) -> None:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fill(fh)
                    fh.flush()
                    os.fsync(fh.fileno())
                if if_absent:
                    # link() fails if the target exists: an atomic create-if-absent on POSIX.
                    try:
                        os.link(tmp, path)
                    except FileExistsError as exc:
                        raise PreconditionFailed(f"object {key!r} already exists") from exc
                else:
                    os.replace(tmp, path)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            raise StorageUnavailable(f"cannot write {key!r}: {exc}") from exc

    def get(self, key: str) -> bytes:
        """Read the whole file."""
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise ObjectNotFound(key) from exc
        except OSError as exc:
            raise StorageUnavailable(f"cannot read {key!r}: {exc}") from exc

    def download(self, key: str, path: Path) -> None:
        """Copy the file, in the kernel (no pass through this process's memory). A copy, not a link: the
        segment cache's files stay apart from the store's, so damage to one cannot reach the other."""
        try:
            shutil.copyfile(self._path(key), path)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            if not self._path(key).is_file():
                raise ObjectNotFound(key) from exc
            raise StorageUnavailable(f"cannot copy {key!r} to {path}: {exc}") from exc
        except OSError as exc:
            raise StorageUnavailable(f"cannot copy {key!r} to {path}: {exc}") from exc

    def exists(self, key: str) -> bool:
        """Whether the file exists."""
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        """Unlink the file if present."""
        try:
            self._path(key).unlink(missing_ok=True)
        except (IsADirectoryError, NotADirectoryError):
            return  # a "directory" of other keys, or a path through an object: no object here
        except OSError as exc:
            raise StorageUnavailable(f"cannot delete {key!r}: {exc}") from exc

    def list(self, prefix: str) -> Iterator[str]:
        """Walk the tree below the prefix's directory."""
        if not _could_prefix_a_key(prefix):
            return  # e.g. "../" or "/etc/": would walk outside the root
        base = self.root / prefix.rsplit("/", 1)[0] if "/" in prefix else self.root
        if not base.is_dir():
            return
        keys = []
        for dirpath, _dirs, files in os.walk(base):
            for name in files:
                if name.startswith(".tmp-"):
                    continue
                key = Path(dirpath, name).relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    keys.append(key)
        yield from sorted(keys)

    def scan(self, prefix: str) -> Iterator[StoredObject]:
        """Each listed file with its ``stat``; a file removed meanwhile is left out."""
        for key in self.list(prefix):
            try:
                st = self._path(key).stat()
            except FileNotFoundError:
                continue
            yield StoredObject(key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))

    def ping(self) -> None:
        """The root directory must exist and be writable."""
        if not os.access(self.root, os.W_OK):
            raise StorageUnavailable(f"{self.root} is not writable")


class S3Store:
    """Objects in one S3 bucket (AWS or any S3-compatible server), optionally under a key prefix."""

    def __init__(self, client: S3Client, bucket: str, prefix: str = "") -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""

    def _key(self, key: str) -> str:
        return self.prefix + _check_key(key)

    def put(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        """PutObject; ``if_absent`` sends ``If-None-Match: *`` so the server refuses an overwrite."""
        extra: dict[str, Any] = {"IfNoneMatch": "*"} if if_absent else {}
        with _translate(key):
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, **extra)

    def put_file(self, key: str, path: Path) -> None:
        """PutObject with the open file as its body: botocore reads (and signs) it in chunks."""
        try:
            with path.open("rb") as body, _translate(key):
                self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=body)
        except OSError as exc:
            raise StorageUnavailable(f"cannot read {path} for {key!r}: {exc}") from exc

    def get(self, key: str) -> bytes:
        """GetObject, read fully."""
        with _translate(key):
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
            try:
                return body.read()
            finally:
                body.close()

    def download(self, key: str, path: Path) -> None:
        """GetObject, streamed into the file in chunks."""
        with _translate(key):
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
            try:
                with path.open("wb") as dst:
                    for chunk in body.iter_chunks(_CHUNK):
                        dst.write(chunk)
            except OSError as exc:
                raise StorageUnavailable(f"cannot write {key!r} to {path}: {exc}") from exc
            finally:
                body.close()

    def exists(self, key: str) -> bool:
        """HeadObject."""
        try:
            with _translate(key):
                self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ObjectNotFound:
            return False
        return True

    def delete(self, key: str) -> None:
        """DeleteObject (idempotent in S3)."""
        with _translate(key):
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def list(self, prefix: str) -> Iterator[str]:
        """ListObjectsV2, all pages; filtered and sorted here, as not every S3 API server lists like AWS.

        SeaweedFS lists depth-first ("a/b/c" before "a/b-x") and normalises prefixes ("/a/" and "a//" match "a/").
        """
        yield from (obj.key for obj in self.scan(prefix))

    def scan(self, prefix: str) -> Iterator[StoredObject]:
        """ListObjectsV2 with each object's ``Size`` and ``LastModified``."""
        full = self.prefix + prefix
        paginator = self.client.get_paginator("list_objects_v2")
        with _translate(prefix):
            found = [
                StoredObject(obj["Key"][len(self.prefix) :], obj["Size"], obj["LastModified"].astimezone(UTC))
                for page in paginator.paginate(Bucket=self.bucket, Prefix=full)
                for obj in page.get("Contents", [])
                if obj["Key"].startswith(full)
            ]
        yield from sorted(found, key=lambda obj: obj.key)

    def ping(self) -> None:
        """HeadBucket."""
        try:
            with _translate(self.bucket):
                self.client.head_bucket(Bucket=self.bucket)
        except ObjectNotFound as exc:
            raise StorageUnavailable(f"S3 bucket {self.bucket!r} does not exist") from exc


@contextlib.contextmanager
def _translate(key: str) -> Iterator[None]:
    """Turn botocore's errors into semaflow's storage errors."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except ClientError as exc:
        err = exc.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code == "NoSuchBucket":
            raise StorageUnavailable(f"S3 bucket for {key!r} does not exist") from exc
        if code in ("NoSuchKey", "404", "NotFound") or status == 404:
            raise ObjectNotFound(key) from exc
        if code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412):
            raise PreconditionFailed(f"object {key!r} already exists or changed") from exc
        raise StorageUnavailable(f"S3 error on {key!r}: {code or status}") from exc
    except BotoCoreError as exc:
        raise StorageUnavailable(f"S3 unreachable for {key!r}: {exc}") from exc


def open_store(settings: Settings) -> ObjectStore:
    """Build the store the settings ask for: S3 when a bucket is set, else a local directory.

    Raises:
        ConfigurationError: S3 settings are incomplete.
    """
    if settings.s3_bucket is None:
        return LocalStore(settings.local_store_dir)
    import boto3
    from botocore.config import Config

    secret = settings.s3_secret_access_key
    if (settings.s3_access_key_id is None) != (secret is None):
        raise ConfigurationError("set both SEMAFLOW_S3_ACCESS_KEY_ID and SEMAFLOW_S3_SECRET_ACCESS_KEY, or neither")
    client = boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint_url,
        region_name=settings.s3_region,
        aws_access_key_id=settings.s3_access_key_id,
        aws_secret_access_key=secret.get_secret_value() if secret else None,
        config=Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=5,
            read_timeout=30,
        ),
    )
    return S3Store(client, settings.s3_bucket, settings.s3_prefix)
