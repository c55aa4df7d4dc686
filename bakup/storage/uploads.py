"""Incomplete multipart uploads that runs left behind when they died mid-upload, found and
aborted.

An upload that is never completed lists no object, so nothing mistakes it for a backup, but
its parts stay stored (and billed) until it is aborted, and obstore has no call that lists
them. S3 and GCS both answer the S3-style ListMultipartUploads, ListParts and
AbortMultipartUpload requests; bakup asks them for the uploads under its own prefix and aborts
those nothing has been added to for a while (``ORPHAN_AFTER`` in ``objectstore``). A live upload
adds a part every few megabytes of compressed dump, so only a dead (or hopelessly stuck) one
stays quiet that long.
Azure needs none of this: it discards uncommitted blocks by itself after a week.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote, urlsplit
from xml.etree import ElementTree

if TYPE_CHECKING:
    from types_boto3_s3.type_defs import MultipartUploadTypeDef

GCS_SCOPE = "https://www.googleapis.com/auth/devstorage.read_write"
TIMEOUT = 30.0


@dataclass(frozen=True)
class PendingUpload:
    """One incomplete multipart upload: its key in the bucket and when it last grew (its
    newest part, or its start if it has none)."""

    key: str
    upload_id: str
    last_activity: datetime


def abandoned(
    uploads: Iterable[PendingUpload], now: datetime, quiet_for: timedelta
) -> list[PendingUpload]:
    """The uploads nothing was added to for longer than ``quiet_for`` before ``now``."""
    return [upload for upload in uploads if now - upload.last_activity > quiet_for]


class Uploads(Protocol):
    """The incomplete uploads under one prefix of one bucket."""

    def pending(self) -> list[PendingUpload]:
        """Every incomplete upload directly under the prefix. Raises on any failure."""
        ...

    def abort(self, upload: PendingUpload) -> None:
        """Abort ``upload``, dropping its parts. Raises on any failure."""
        ...


def for_url(url: str, endpoint: str | None) -> Uploads | None:
    """The uploads of an ``s3://bucket/prefix`` or ``gs://`` destination, the keys of the
    backups directly under the prefix; None for stores that need no cleaning (``az://``).
    Raises whatever the cloud's client raises when it cannot be set up."""
    parts = urlsplit(url)
    prefix = parts.path.strip("/")
    prefix = f"{prefix}/" if prefix else ""
    if parts.scheme == "s3":
        return S3Uploads(parts.netloc, prefix, endpoint)
    if parts.scheme == "gs":
        return GcsUploads(parts.netloc, prefix)
    return None


def _directly_under(prefix: str, key: str) -> bool:
    # Other databases' folders may sit below this prefix: leave their uploads to them.
    return key.startswith(prefix) and "/" not in key[len(prefix) :]


class S3Uploads:
    """Through boto3, with the same standard AWS variables obstore reads."""

    def __init__(self, bucket: str, prefix: str, endpoint: str | None) -> None:
        import boto3
        from botocore.config import Config

        self.bucket, self.prefix = bucket, prefix
        config = Config(
            connect_timeout=10,
            read_timeout=TIMEOUT,
            retries={"max_attempts": 3, "mode": "standard"},
            # Path-style requests for custom endpoints, as obstore sends them (MinIO and
            # most S3-compatible services expect them).
            s3={"addressing_style": "path"} if endpoint else {},
        )
        # Credentials and region: boto3 reads the same AWS_* variables and files as obstore.
        self.client = boto3.client("s3", endpoint_url=endpoint, config=config)

    def pending(self) -> list[PendingUpload]:
        found = []
        pages = self.client.get_paginator("list_multipart_uploads")
        for page in pages.paginate(Bucket=self.bucket, Prefix=self.prefix):
            for upload in page.get("Uploads", []):
                if _directly_under(self.prefix, upload["Key"]):
                    found.append(self._described(upload))
        return found

    def _described(self, upload: MultipartUploadTypeDef) -> PendingUpload:
        latest = upload["Initiated"]
        parts = self.client.get_paginator("list_parts")
        for page in parts.paginate(
            Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
        ):
            for part in page.get("Parts", []):
                latest = max(latest, part["LastModified"])
        return PendingUpload(upload["Key"], upload["UploadId"], latest)

    def abort(self, upload: PendingUpload) -> None:
        self.client.abort_multipart_upload(
            Bucket=self.bucket, Key=upload.key, UploadId=upload.upload_id
        )


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _children(element: ElementTree.Element, name: str) -> Iterator[ElementTree.Element]:
    return (child for child in element if _local(child.tag) == name)


def _text(element: ElementTree.Element, name: str) -> str:
    return next((child.text or "" for child in _children(element, name)), "")


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def gcs_endpoint() -> tuple[str, dict[str, str]]:
    """GCS's XML API address and the headers that authorise a request, found the way
    obstore finds them: a service-account file or key from the standard variables, signing
    its own JWT as obstore does (no token exchange, so it works wherever obstore works), else
    Application Default Credentials; ``gcs_base_url`` in the file (or ``GOOGLE_BASE_URL``)
    points at an emulator. Raises what google-auth raises."""
    key = os.environ.get("GOOGLE_SERVICE_ACCOUNT_KEY")
    path = next(
        (
            os.environ[name]
            for name in (
                "GOOGLE_SERVICE_ACCOUNT",
                "GOOGLE_SERVICE_ACCOUNT_PATH",
                "GOOGLE_APPLICATION_CREDENTIALS",
            )
            if os.environ.get(name)
        ),
        None,
    )
    info: dict[str, Any] = {}
    if key:
        info = json.loads(key)
    elif path:
        info = json.loads(Path(path).read_text())
    base = (
        os.environ.get("GOOGLE_BASE_URL")
        or info.get("gcs_base_url")
        or "https://storage.googleapis.com"
    )
    token = os.environ.get("GOOGLE_BEARER_TOKEN")
    if not token:
        import google.auth
        import google.auth.transport.urllib3
        import urllib3
        from google.oauth2 import service_account

        if info.get("type") == "service_account":
            credentials = service_account.Credentials.from_service_account_info(
                info, scopes=[GCS_SCOPE], always_use_jwt_access=True
            )
        else:
            credentials, _ = google.auth.default(scopes=[GCS_SCOPE])
        credentials.refresh(google.auth.transport.urllib3.Request(urllib3.PoolManager()))
        token = credentials.token
    return base.rstrip("/"), {"Authorization": f"Bearer {token}"}


class GcsUploads:
    """Through GCS's XML API (the one obstore uploads with), over httpx."""

    def __init__(self, bucket: str, prefix: str) -> None:
        import httpx

        self.bucket, self.prefix = bucket, prefix
        base, headers = gcs_endpoint()
        self.client = httpx.Client(base_url=base, headers=headers, timeout=TIMEOUT)

    def _get(self, path: str, params: dict[str, str]) -> ElementTree.Element:
        response = self.client.get(path, params=params)
        response.raise_for_status()
        return ElementTree.fromstring(response.content)

    def _object_path(self, key: str) -> str:
        return f"/{quote(self.bucket, safe='')}/{quote(key, safe='/')}"

    def pending(self) -> list[PendingUpload]:
        found = []
        params = {"uploads": "", "prefix": self.prefix}
        while True:
            result = self._get(f"/{quote(self.bucket, safe='')}", params)
            for upload in _children(result, "Upload"):
                key = _text(upload, "Key")
                if _directly_under(self.prefix, key):
                    found.append(self._described(key, _text(upload, "UploadId"), upload))
            if _text(result, "IsTruncated") != "true":
                return found
            params = {
                **params,
                "key-marker": _text(result, "NextKeyMarker"),
                "upload-id-marker": _text(result, "NextUploadIdMarker"),
            }

    def _described(self, key: str, upload_id: str, upload: ElementTree.Element) -> PendingUpload:
        latest = _time(_text(upload, "Initiated"))
        params = {"uploadId": upload_id}
        while True:
            result = self._get(self._object_path(key), params)
            for part in _children(result, "Part"):
                latest = max(latest, _time(_text(part, "LastModified")))
            if _text(result, "IsTruncated") != "true":
                return PendingUpload(key, upload_id, latest)
            params = {**params, "part-number-marker": _text(result, "NextPartNumberMarker")}

    def abort(self, upload: PendingUpload) -> None:
        response = self.client.delete(
            self._object_path(upload.key), params={"uploadId": upload.upload_id}
        )
        if response.status_code != 404:  # already gone is as good as aborted
            response.raise_for_status()
