"""Where backups are kept: one module per backend behind the interface in ``base``."""

from __future__ import annotations

import os
from pathlib import Path

from bakup.storage.base import Storage, StoredWriter
from bakup.storage.local import LocalStorage

__all__ = ["LocalStorage", "Storage", "StoredWriter", "is_object_store", "open_storage"]

OBJECT_SCHEMES = ("s3://", "gs://", "az://")


def is_object_store(location: str | Path) -> bool:
    """Whether ``location`` names an object store (s3://, gs://, az://) rather than a folder."""
    return str(location).startswith(OBJECT_SCHEMES)


def open_storage(location: str | Path | tuple[str, ...]) -> Storage:
    """Return the backend for ``location``: a local directory (a path or file:// URL), an
    object store (whose client library is imported only then), or several of them at once.
    Raises StorageError for an object-store URL the client cannot use."""
    if isinstance(location, tuple):
        from bakup.storage.multi import MultiStorage

        return MultiStorage([open_storage(member) for member in location])
    text = str(location)
    if is_object_store(text):
        from bakup.storage.objectstore import ObjectStorage

        # S3_ENDPOINT_URL names an S3-compatible service: it must not redirect gs:// or az://
        # destinations listed beside an s3:// one.
        endpoint = os.environ.get("S3_ENDPOINT_URL") if text.startswith("s3://") else None
        return ObjectStorage(text, endpoint=endpoint or None)
    if text.startswith("file://"):
        return LocalStorage(Path(text.removeprefix("file://")))
    return LocalStorage(Path(text))
