"""Object stores as backup storage: S3 and S3-compatible services (MinIO, R2, B2), Google Cloud
Storage and Azure Blob Storage, through obstore: one code path for the three clouds (Rust's
object_store), streaming multipart uploads and the clouds' standard credential variables.

Objects cannot be renamed cheaply, so the data object is uploaded under its final name (a
multipart upload stays invisible until it completes: that completion is the publication) and
the manifest records its state. A claim is a manifest created with the store's conditional
put (``If-None-Match: *`` or its equivalent), so two runs never get the same name. A data
object is never deleted for lacking a manifest: it is adopted (``bakup.lifecycle``). The
incomplete multipart uploads of runs that died mid-upload are aborted by a later prune
(``bakup.storage.uploads``), except those of live claims.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import uuid
from collections.abc import Collection
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import urlsplit

import obstore
from obstore import exceptions as store_errors
from obstore.store import from_url

from bakup.errors import StorageError
from bakup.storage import uploads
from bakup.storage.base import CHUNKS_FOLDER, Storage, StoredWriter

if TYPE_CHECKING:
    from obstore import ObjectMeta

SCHEMES = ("s3", "gs", "az")
ORPHAN_AFTER = timedelta(minutes=15)
# Parts of 10 MB in flight at once: each holds its bytes until the store has them, so when the
# store is slower than the dump (a thin uplink) they pile up beside the compressor. Measured
# with zstd through a 15 MB/s uplink (bench/storage_speed --uplink-mb-s 15): peak RSS 176 MB
# with obstore's default of 12, 146 MB with 4, 125 MB with 2; on a fast link 2 is as quick.
UPLOAD_CONCURRENCY = 2
log = logging.getLogger("bakup")


def describe_url(url: str) -> str:
    """The URL without credentials or query: ``s3://bucket/prefix``."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{parts.path}".rstrip("/")


def first_line(error: Exception) -> str:
    """The error's first line, without obstore's "Generic S3 error: " kind of prefix."""
    lines = str(error).strip().splitlines() or [type(error).__name__]
    return re.sub(r"^Generic \S+ error: ", "", lines[0])


def storage_error(error: Exception, where: str, *, stage: str = "store") -> StorageError:
    """One line for a failed object-store call, transient unless retrying cannot help."""
    text = first_line(error)
    if "NoSuchBucket" in str(error) or "ContainerNotFound" in str(error):
        return StorageError(
            f"{where}: the bucket does not exist: create it or fix STORAGE_URL",
            stage=stage,
            transient=False,
        )
    if isinstance(
        error, (store_errors.UnauthenticatedError, store_errors.PermissionDeniedError)
    ) or any(
        code in str(error)
        for code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403 Forbidden")
    ):
        return StorageError(
            f"{where}: the credentials were refused: check the cloud's credential variables",
            stage=stage,
            transient=False,
        )
    if "error sending request" in text or "Connection refused" in text:
        return StorageError(
            f"{where}: the store could not be reached (after retries): check the endpoint and "
            "the network; scheduled runs retry",
            stage=stage,
        )
    return StorageError(f"{where}: {text[:300]}", stage=stage, transient=True)


class ObjectWriter(StoredWriter):
    """A multipart upload of one data object."""

    def __init__(self, store: Any, key: str, where: str) -> None:
        self._where = where
        self._writer = obstore.open_writer(store, key, max_concurrency=UPLOAD_CONCURRENCY)
        self._store, self._key = store, key
        self._done = False

    def write(self, data: bytes) -> int:
        try:
            self._writer.write(data)
        except Exception as error:
            raise storage_error(error, self._where) from None
        return len(data)

    def commit(self) -> None:
        try:
            self._writer.close()
        except Exception as error:
            raise storage_error(error, self._where) from None
        self._done = True

    def abort(self) -> None:
        if self._done:  # completed but not wanted: delete it
            with contextlib.suppress(Exception):
                obstore.delete(self._store, self._key)

    def close(self) -> None:
        """Nothing to release: the manifest written after commit makes the backup."""


class _Reader(io.RawIOBase):
    """obstore's reader as a closable binary stream."""

    def __init__(self, readable: Any) -> None:
        self._readable = readable

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = bytes(self._readable.read(len(buffer)))
        buffer[: len(data)] = data
        return len(data)


class ObjectStorage(Storage):
    """Backups as objects under a prefix of a bucket or container."""

    def __init__(self, url: str, *, endpoint: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.endpoint = endpoint
        options: dict[str, Any] = {}
        if endpoint:
            options["endpoint"] = endpoint
            if endpoint.startswith("http://"):
                options["client_options"] = {"allow_http": True}
        try:
            self.store = from_url(self.url, **options)
        except Exception as error:
            reason = first_line(error)
            advice = ": check the cloud's credential variables" if "credential" in reason else ""
            raise StorageError(
                f"STORAGE_URL {describe_url(url)}: {reason}{advice}", transient=False
            ) from None

    def describe(self) -> str:
        return describe_url(self.url)

    def _where(self, name: str = "") -> str:
        return f"{self.describe()}/{name}" if name else self.describe()

    def prepare(self) -> None:
        probe = f".bakup-probe-{uuid.uuid4().hex}"
        try:
            obstore.put(self.store, probe, b"")
            obstore.delete(self.store, probe)
        except Exception as error:
            raise storage_error(error, self._where()) from None

    def open_writer(self, name: str) -> ObjectWriter:
        if name in self.list_names():
            raise StorageError(
                f"{self._where(name)} already exists", stage="store", transient=False
            )
        return ObjectWriter(self.store, name, self._where(name))

    def put_small(self, name: str, data: bytes) -> None:
        try:
            obstore.put(self.store, name, data)
        except Exception as error:
            raise storage_error(error, self._where(name), stage="manifest") from None

    def create_small(self, name: str, data: bytes) -> bool:
        try:
            obstore.put(self.store, name, data, mode="create")
        except (store_errors.AlreadyExistsError, store_errors.PreconditionError):
            return False
        except Exception as error:
            raise storage_error(error, self._where(name), stage="manifest") from None
        return True

    def append_small(self, name: str, data: bytes) -> None:
        # Objects cannot be appended to: read, extend, write back (the journal is small, and
        # one database's runs are serialised by its lock).
        try:
            current = self.get_small(name)
        except FileNotFoundError:
            current = b""
        self.put_small(name, current + data)

    def get_small(self, name: str) -> bytes:
        try:
            return bytes(obstore.get(self.store, name).bytes())
        except FileNotFoundError:
            raise
        except Exception as error:
            raise storage_error(error, self._where(name)) from None

    def open_reader(self, name: str) -> BinaryIO:
        try:
            return io.BufferedReader(_Reader(obstore.open_reader(self.store, name)), 1 << 20)
        except Exception as error:
            raise storage_error(error, self._where(name)) from None

    def size(self, name: str) -> int:
        try:
            return int(obstore.head(self.store, name)["size"])
        except Exception as error:
            raise storage_error(error, self._where(name)) from None

    def _objects(self) -> list[ObjectMeta]:
        try:
            listing = obstore.list_with_delimiter(self.store)
        except Exception as error:
            raise storage_error(error, self._where()) from None
        return list(listing["objects"])

    def list_names(self) -> list[str]:
        return sorted(
            meta["path"]
            for meta in self._objects()
            if not os.path.basename(meta["path"]).startswith(".")
        )

    def list_sizes(self) -> dict[str, int]:
        # Page by page, keeping only name and size: a chunk store holds tens of thousands of
        # objects, and a whole listing's metadata would grow the process with them.
        sizes: dict[str, int] = {}
        try:
            for page in obstore.list(self.store, chunk_size=1000):
                for meta in page:
                    path = meta["path"]
                    if "/" not in path and not path.startswith("."):
                        sizes[path] = int(meta["size"])
        except Exception as error:
            raise storage_error(error, self._where()) from None
        return sizes

    def chunk_storages(self) -> list[Storage]:
        return [ObjectStorage(f"{self.url}/{CHUNKS_FOLDER}", endpoint=self.endpoint)]

    def delete(self, name: str) -> None:
        try:
            obstore.delete(self.store, name)
        except FileNotFoundError:
            pass
        except Exception as error:
            raise storage_error(error, self._where(name), stage="prune") from None

    def abort_abandoned_uploads(
        self, live: Collection[str] = (), dead: Collection[str] = ()
    ) -> list[str]:
        # Failing to is only a warning: it costs storage, not backups, and a least-privilege
        # key may not be allowed to list uploads.
        now = datetime.now(UTC)
        try:
            pending = uploads.for_url(self.url, self.endpoint)
            if pending is None:
                return []
            removed = []
            for upload in pending.pending():
                name = os.path.basename(upload.key)
                if name in live:
                    continue  # its run is alive, only slow
                if name not in dead and not uploads.abandoned([upload], now, ORPHAN_AFTER):
                    continue  # no claim explains it: wait until it has been quiet a while
                pending.abort(upload)
                removed.append(f"{os.path.basename(upload.key)} (incomplete upload)")
            return removed
        except Exception as error:
            log.warning(
                "WARNING: %s: could not clean up incomplete uploads (%s: %s); backups are not "
                "affected. The credentials must be able to list and abort multipart uploads, "
                "or give the bucket a lifecycle rule that aborts them",
                self.describe(),
                type(error).__name__,
                first_line(error)[:200],
            )
            return []
