"""A throwaway Google Cloud Storage emulator on localhost: gcp-storage-emulator, with the
XML API that GCS clients built on object_store (obstore, hence bakup) speak.

gcp-storage-emulator implements GCS's JSON API and only a bare XML PUT and GET. object_store
uses the XML API throughout (the S3-compatible one GCS documents): PUT answered with an ETag,
GET and HEAD with ETag, Last-Modified and ranges, DELETE, ``?list-type=2`` listings and
``?uploads`` multipart uploads. This module serves those requests from the emulator's own
storage and hands every other request (the JSON API: bucket creation, object listings) to
the emulator unchanged, so both APIs see the same buckets and objects.

Like GCS, it checks credentials: every XML API request must carry a bearer JWT signed with the
service account's key (what object_store and google-auth send for a service account), checked
against the public key it is started with; anything else gets 401. The JSON API is left open
for the test's own setup.

Run as a program (``python tests/support/gcs_server.py PORT PUBLIC_KEY_PEM``) it serves until
killed, so a test can kill it in the middle of an upload; ``start()`` does that and waits for
the port. Test-only controls: ``POST /_test/age-uploads?seconds=N`` makes every incomplete
upload N seconds older (what a later run does with the leftovers of one that died an hour
ago), ``POST /_test/deny-upload-listing`` refuses listing uploads from then on (a key without
that permission), ``GET /_test/uploads`` lists the keys of incomplete uploads.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from http import HTTPStatus
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit
from xml.etree import ElementTree

# The JSON API's own paths stay with the emulator.
JSON_API = ("/storage/", "/upload/", "/download/", "/batch/", "/b/", "/_internal/")
# object_store percent-encodes bucket names and keys alike (``no%2Dsuch%2Dbucket``).
OBJECT_PATH = re.compile(r"^/(?P<bucket>[^/]+)/(?P<key>.+)$")
BUCKET_PATH = re.compile(r"^/(?P<bucket>[^/]+)/?$")


@dataclass
class Upload:
    """A multipart upload in progress: its parts by number, with when each came."""

    bucket: str
    key: str
    initiated: datetime
    parts: dict[int, tuple[bytes, datetime]] = field(default_factory=dict)


def _xml(
    tag: str, children: dict[str, str], parent: ElementTree.Element | None = None
) -> ElementTree.Element:
    """An element holding one text element per entry of ``children``, under ``parent``."""
    element = ElementTree.Element(tag) if parent is None else ElementTree.SubElement(parent, tag)
    for name, text in children.items():
        ElementTree.SubElement(element, name).text = text
    return element


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _etag(obj: dict[str, Any]) -> str:
    return '"' + base64.b64decode(obj["md5Hash"]).hex() + '"'


def _resource(bucket: str, key: str, content: bytes, content_type: str) -> dict[str, Any]:
    """The object's metadata as the emulator's JSON API keeps and lists it."""
    now = datetime.now(UTC)
    stamp = now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    generation = str(time.time_ns())
    md5 = base64.b64encode(hashlib.md5(content).digest()).decode()
    return {
        "kind": "storage#object",
        "id": f"{bucket}/{key}/{generation}",
        "name": key,
        "bucket": bucket,
        "generation": generation,
        "metageneration": "1",
        "contentType": content_type,
        "timeCreated": stamp,
        "updated": stamp,
        "storageClass": "STANDARD",
        "size": str(len(content)),
        "md5Hash": md5,
        "etag": md5,
    }


def _updated(obj: dict[str, Any]) -> datetime:
    return datetime.strptime(obj["updated"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def _signed_by(authorization: str, key: Any) -> bool:
    """Whether ``authorization`` is ``Bearer <JWT>`` with an RS256 signature by ``key``'s
    private half and an expiry still ahead."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    def decoded(part: str) -> bytes:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))

    try:
        header, claims, signature = authorization.removeprefix("Bearer ").split(".")
        key.verify(
            decoded(signature), f"{header}.{claims}".encode(), padding.PKCS1v15(), hashes.SHA256()
        )
        return json.loads(decoded(claims))["exp"] > time.time()
    except (ValueError, KeyError, InvalidSignature):
        return False


def make_handler(trusted_key: Any) -> type:
    """The request handler class: the emulator's, with the XML API in front of it, open only
    to requests signed by the private half of ``trusted_key``."""
    from gcp_storage_emulator import server as emulator
    from gcp_storage_emulator.exceptions import NotFound

    lock = threading.Lock()
    uploads: dict[str, Upload] = {}
    denied: set[str] = set()

    class Handler(emulator.RequestHandler):
        protocol_version = "HTTP/1.1"

        # -- plumbing -------------------------------------------------------------------

        def _route(self, method: str) -> None:
            parts = urlsplit(self.path)
            self.query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
            path = parts.path
            if path.startswith("/_test/"):
                self._test_control(path)
                return
            if path in ("/", "/wipe") or path.startswith(JSON_API):
                self._emulator(method)
                return
            if not _signed_by(self.headers.get("Authorization", ""), trusted_key):
                message = "Invalid credentials."
                head = method == "HEAD"
                self._error(HTTPStatus.UNAUTHORIZED, "AuthenticationRequired", message, head)
                return
            try:
                with lock:
                    if match := OBJECT_PATH.match(path):
                        self._object(method, unquote(match["bucket"]), unquote(match["key"]))
                    elif match := BUCKET_PATH.match(path):
                        self._bucket(method, unquote(match["bucket"]))
                    else:
                        self._error(HTTPStatus.NOT_FOUND, "InvalidURI", path)
            except NotFound:
                self._error(HTTPStatus.NOT_FOUND, "NoSuchKey", "No such object.")

        def _emulator(self, method: str) -> None:
            # The emulator's responses carry Content-Length but it expects one request per
            # connection.
            self.close_connection = True
            emulator.Router(self).handle(method)

        def _body(self) -> bytes:
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _send(
            self,
            status: HTTPStatus,
            body: bytes = b"",
            headers: dict[str, str] | None = None,
            *,
            head: bool = False,
            length: int | None = None,
        ) -> None:
            self.send_response(status.value)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body) if length is None else length))
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def _send_xml(
            self, element: ElementTree.Element, headers: dict[str, str] | None = None
        ) -> None:
            body = b"<?xml version='1.0' encoding='UTF-8'?>" + ElementTree.tostring(element)
            self._send(HTTPStatus.OK, body, {"Content-Type": "application/xml", **(headers or {})})

        def _error(self, status: HTTPStatus, code: str, message: str, head: bool = False) -> None:
            self._body()
            body = ElementTree.tostring(_xml("Error", {"Code": code, "Message": message}))
            self._send(status, body, {"Content-Type": "application/xml"}, head=head)

        def _has_bucket(self, bucket: str) -> bool:
            return self.storage.get_bucket(bucket) is not None

        def _no_bucket(self, head: bool = False) -> None:
            self._error(
                HTTPStatus.NOT_FOUND, "NoSuchBucket", "The specified bucket does not exist.", head
            )

        # -- objects --------------------------------------------------------------------

        def _object(self, method: str, bucket: str, key: str) -> None:
            if not self._has_bucket(bucket):
                self._no_bucket(head=method == "HEAD")
            elif method == "POST" and "uploads" in self.query:
                self._initiate(bucket, key)
            elif method == "POST" and "uploadId" in self.query:
                self._complete(bucket, key, self.query["uploadId"])
            elif method == "PUT" and "uploadId" in self.query:
                self._put_part(self.query["uploadId"], int(self.query["partNumber"]))
            elif method == "DELETE" and "uploadId" in self.query:
                self._body()
                uploads.pop(self.query["uploadId"], None)
                self._send(HTTPStatus.NO_CONTENT)
            elif method == "PUT" and "x-goog-copy-source" not in self.headers:
                # GCS's create-only put, which bakup's claims rely on: generation 0 means
                # "only if no live object has this name".
                if self.headers.get("x-goog-if-generation-match") == "0" and self._exists(
                    bucket, key
                ):
                    self._error(HTTPStatus.PRECONDITION_FAILED, "PreconditionFailed", key)
                else:
                    self._store(bucket, key, self._body())
            elif method == "GET" and "uploadId" in self.query:
                self._list_parts(self.query["uploadId"])
            elif method in ("GET", "HEAD"):
                self._get(bucket, key, head=method == "HEAD")
            elif method == "DELETE":
                self._body()
                self.storage.delete_file(bucket, key)
                self._send(HTTPStatus.NO_CONTENT)
            else:
                self._error(HTTPStatus.NOT_IMPLEMENTED, "NotImplemented", method)

        def _exists(self, bucket: str, key: str) -> bool:
            try:
                self.storage.get_file_obj(bucket, key)
            except Exception:  # the emulator's own NotFound
                return False
            return True

        def _store(self, bucket: str, key: str, content: bytes) -> None:
            content_type = self.headers.get("Content-Type", "application/octet-stream")
            obj = _resource(bucket, key, content, content_type)
            self.storage.create_file(bucket, key, content, obj)
            self._send(
                HTTPStatus.OK,
                headers={"ETag": _etag(obj), "x-goog-generation": obj["generation"]},
            )

        def _get(self, bucket: str, key: str, *, head: bool) -> None:
            obj = self.storage.get_file_obj(bucket, key)
            content = self.storage.get_file(bucket, key)
            headers = {
                "ETag": _etag(obj),
                "Last-Modified": email.utils.format_datetime(_updated(obj), usegmt=True),
                "Content-Type": obj.get("contentType") or "application/octet-stream",
                "x-goog-generation": obj["generation"],
                "Accept-Ranges": "bytes",
            }
            status = HTTPStatus.OK
            ranged = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
            if ranged:
                start = int(ranged[1])
                end = min(len(content), int(ranged[2]) + 1 if ranged[2] else len(content))
                if start >= len(content):
                    self._error(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, "InvalidRange", "")
                    return
                headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(content)}"
                content, status = content[start:end], HTTPStatus.PARTIAL_CONTENT
            self._send(status, content, headers, head=head, length=len(content))

        # -- multipart uploads ----------------------------------------------------------

        def _initiate(self, bucket: str, key: str) -> None:
            self._body()
            upload_id = uuid.uuid4().hex
            uploads[upload_id] = Upload(bucket, key, datetime.now(UTC))
            self._send_xml(
                _xml(
                    "InitiateMultipartUploadResult",
                    {"Bucket": bucket, "Key": key, "UploadId": upload_id},
                )
            )

        def _put_part(self, upload_id: str, number: int) -> None:
            content = self._body()
            upload = uploads.get(upload_id)
            if upload is None:
                self._error(HTTPStatus.NOT_FOUND, "NoSuchUpload", upload_id)
                return
            upload.parts[number] = (content, datetime.now(UTC))
            self._send(HTTPStatus.OK, headers={"ETag": f'"{uuid.uuid4().hex}"'})

        def _list_parts(self, upload_id: str) -> None:
            upload = uploads.get(upload_id)
            if upload is None:
                self._error(HTTPStatus.NOT_FOUND, "NoSuchUpload", upload_id)
                return
            result = _xml("ListPartsResult", {"Key": upload.key, "UploadId": upload_id})
            for number, (content, when) in sorted(upload.parts.items()):
                part = {
                    "PartNumber": str(number),
                    "LastModified": _iso(when),
                    "Size": str(len(content)),
                }
                _xml("Part", part, result)
            self._send_xml(result)

        def _test_control(self, path: str) -> None:
            self._body()
            with lock:
                if path == "/_test/uploads":
                    keys = sorted(upload.key for upload in uploads.values())
                    self._send(HTTPStatus.OK, json.dumps(keys).encode())
                    return
                if path == "/_test/age-uploads":
                    by = timedelta(seconds=float(self.query["seconds"]))
                    for upload in uploads.values():
                        upload.initiated -= by
                        upload.parts = {n: (c, t - by) for n, (c, t) in upload.parts.items()}
                elif path == "/_test/deny-upload-listing":
                    denied.add("list-uploads")
            self._send(HTTPStatus.NO_CONTENT)

        def _complete(self, bucket: str, key: str, upload_id: str) -> None:
            requested = ElementTree.fromstring(self._body() or b"<CompleteMultipartUpload/>")
            upload = uploads.pop(upload_id, None)
            if upload is None:
                self._error(HTTPStatus.NOT_FOUND, "NoSuchUpload", upload_id)
                return
            numbers = [int(part.findtext("PartNumber") or 0) for part in requested.iter("Part")]
            content = b"".join(upload.parts[number][0] for number in numbers)
            obj = _resource(bucket, key, content, "application/octet-stream")
            self.storage.create_file(bucket, key, content, obj)
            result = {"Bucket": bucket, "Key": key, "ETag": _etag(obj)}
            self._send_xml(
                _xml("CompleteMultipartUploadResult", result),
                {"x-goog-generation": obj["generation"]},
            )

        # -- buckets --------------------------------------------------------------------

        def _bucket(self, method: str, bucket: str) -> None:
            if method != "GET":
                self._error(HTTPStatus.NOT_IMPLEMENTED, "NotImplemented", method)
            elif not self._has_bucket(bucket):
                self._no_bucket()
            elif "uploads" in self.query and "list-uploads" in denied:
                message = "The caller does not have storage.multipartUploads.list access."
                self._error(HTTPStatus.FORBIDDEN, "AccessDenied", message)
            elif "uploads" in self.query:
                self._list_uploads(bucket)
            else:
                self._list(bucket)

        def _list(self, bucket: str) -> None:
            # Always the whole listing in one page: bakup's folders hold a few hundred objects.
            prefix = self.query.get("prefix", "")
            delimiter = self.query.get("delimiter") or None
            found, prefixes = self.storage.get_file_list(bucket, prefix or None, delimiter)
            result = _xml("ListBucketResult", {"Name": bucket, "Prefix": prefix})
            for obj in found:
                entry = {
                    "Key": obj["name"],
                    "LastModified": _iso(_updated(obj)),
                    "ETag": _etag(obj),
                    "Size": str(obj["size"]),
                }
                _xml("Contents", entry, result)
            for common in prefixes:
                _xml("CommonPrefixes", {"Prefix": common}, result)
            self._send_xml(result)

        def _list_uploads(self, bucket: str) -> None:
            prefix = self.query.get("prefix", "")
            result = _xml("ListMultipartUploadsResult", {"Bucket": bucket, "Prefix": prefix})
            for upload_id, upload in sorted(uploads.items()):
                if upload.bucket == bucket and upload.key.startswith(prefix):
                    entry = {
                        "Key": upload.key,
                        "UploadId": upload_id,
                        "Initiated": _iso(upload.initiated),
                    }
                    _xml("Upload", entry, result)
            self._send_xml(result)

        # -- methods --------------------------------------------------------------------

        def do_GET(self) -> None:  # noqa: N802 (the name http.server calls)
            self._route("GET")

        def do_HEAD(self) -> None:  # noqa: N802 (the name http.server calls)
            self._route("HEAD")

        def do_PUT(self) -> None:  # noqa: N802 (the name http.server calls)
            self._route("PUT")

        def do_POST(self) -> None:  # noqa: N802 (the name http.server calls)
            self._route("POST")

        def do_DELETE(self) -> None:  # noqa: N802 (the name http.server calls)
            self._route("DELETE")

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the tests read bakup's output, not the server's."""

    return Handler


def serve(port: int, public_key: Path) -> None:
    """Serve on 127.0.0.1:``port`` with in-memory storage until killed, accepting requests
    signed by the private half of the PEM public key in ``public_key``."""
    from cryptography.hazmat.primitives import serialization
    from gcp_storage_emulator.storage import Storage

    trusted = serialization.load_pem_public_key(public_key.read_bytes())
    storage = Storage(use_memory_fs=True)
    handler = partial(make_handler(trusted), storage)
    ThreadingHTTPServer(("127.0.0.1", port), handler).serve_forever()


def service_account(path: Path, port: int) -> Any:
    """Write a service-account key file for the emulator on ``port`` with a fresh key, as
    Google hands them out plus ``gcs_base_url``; returns the key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    account = {
        "type": "service_account",
        "gcs_base_url": f"http://127.0.0.1:{port}",
        "client_email": "bakup-test@bakup-test.iam.gserviceaccount.com",
        "private_key": pem.decode(),
        "private_key_id": path.stem,
        # Never called: the key signs its own tokens (see bakup.storage.uploads).
        "token_uri": "https://oauth2.googleapis.com/token",
    }
    path.write_text(json.dumps(account))
    return key


@dataclass
class GcsServer:
    process: subprocess.Popen[bytes]
    port: int
    credentials: Path

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def create_bucket(self, name: str) -> None:
        """Create a bucket through the emulator's JSON API, as gcloud would."""
        request = urllib.request.Request(
            f"{self.endpoint}/storage/v1/b?project=bakup-test",
            data=json.dumps({"name": name}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        urllib.request.urlopen(request, timeout=10).close()

    def object_names(self, bucket: str) -> list[str]:
        """Every object in the bucket, read through the JSON API."""
        with urllib.request.urlopen(f"{self.endpoint}/storage/v1/b/{bucket}/o", timeout=10) as r:
            return sorted(item["name"] for item in json.load(r).get("items", []))

    def pending_uploads(self) -> list[str]:
        """The keys of the incomplete multipart uploads."""
        with urllib.request.urlopen(f"{self.endpoint}/_test/uploads", timeout=10) as r:
            return json.load(r)

    def control(self, action: str) -> None:
        """A test-only control: ``age-uploads?seconds=N`` or ``deny-upload-listing``."""
        request = urllib.request.Request(f"{self.endpoint}/_test/{action}", method="POST")
        urllib.request.urlopen(request, timeout=10).close()

    def env(self) -> dict[str, str]:
        """The service-account key file the emulator trusts, as a user would point to theirs."""
        return {"GOOGLE_SERVICE_ACCOUNT": str(self.credentials)}

    def impostor_env(self) -> dict[str, str]:
        """A well-formed service-account key file with a key the emulator does not trust."""
        impostor = self.credentials.with_name("impostor-account.json")
        service_account(impostor, self.port)
        return {"GOOGLE_SERVICE_ACCOUNT": str(impostor)}

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


def start(directory: Path) -> GcsServer:
    """Start the emulator; its service-account file goes in ``directory``.

    Raises:
        RuntimeError: the emulator is not installed or did not start.
    """
    from cryptography.hazmat.primitives import serialization

    from tests.support.postgres_server import free_port

    port = free_port()
    credentials = directory / "gcs-service-account.json"
    public_key = directory / "gcs-trusted-key.pem"
    public_key.write_bytes(
        service_account(credentials, port)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    process = subprocess.Popen(
        [sys.executable, __file__, str(port), str(public_key)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return GcsServer(process, port, credentials)
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise RuntimeError("the GCS emulator did not start") from None
            time.sleep(0.1)


if __name__ == "__main__":
    serve(int(sys.argv[1]), Path(sys.argv[2]))
