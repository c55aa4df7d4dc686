"""Encryption at rest in the standard age format (age-encryption.org/v1), so `age -d` can also
decrypt a backup by hand: X25519 recipients (``age1...``), identities (``AGE-SECRET-KEY-1...``).

pyrage (bindings to the rage implementation) does the cryptography and streams in 64 KiB
chunks. Its streaming calls pull from a reader and push to a writer; bakup's pipeline pushes,
so each direction runs pyrage on a thread at one end of an OS pipe: memory stays flat.
"""

from __future__ import annotations

import contextlib
import io
import os
import threading
from pathlib import Path
from typing import Any, BinaryIO

import pyrage

from bakup.compression import Compression
from bakup.errors import BakupError, ConfigError

EXTENSION = ".age"


class EncryptionError(BakupError):
    """A backup could not be encrypted or decrypted: the message says which key to check."""


def parse_recipients(text: str, *, name: str = "ENCRYPTION_RECIPIENTS") -> list[Any]:
    """Parse age public keys separated by commas or spaces; raises ValueError naming the bad one."""
    recipients = []
    for key in text.replace(",", " ").split():
        try:
            recipients.append(pyrage.x25519.Recipient.from_str(key))
        except pyrage.RecipientError:
            raise ValueError(f"{name}: {key[:12]}... is not an age public key (age1...)") from None
    if not recipients:
        raise ValueError(f"{name} is empty: give one or more age public keys (age1...)")
    return recipients


def load_identities(path: Path) -> list[Any]:
    """Read the age secret keys in ``path``; raises EncryptionError saying what is wrong."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise EncryptionError(
            f"ENCRYPTION_IDENTITY_FILE {path}: cannot read it ({error.strerror})", stage="config"
        ) from None
    identities = []
    for line in lines:
        line = line.strip()
        if line.startswith("AGE-SECRET-KEY-"):
            try:
                identities.append(pyrage.x25519.Identity.from_str(line))
            except pyrage.IdentityError:
                raise EncryptionError(
                    f"ENCRYPTION_IDENTITY_FILE {path} holds a malformed key", stage="config"
                ) from None
    if not identities:
        raise EncryptionError(
            f"ENCRYPTION_IDENTITY_FILE {path} holds no AGE-SECRET-KEY line", stage="config"
        )
    return identities


class _WatchedSink:
    """Passes writes on to ``sink`` and keeps the first exception it raised.

    pyrage turns an exception raised by the writer it is given into its own EncryptError,
    which would hide a storage failure (and whether it is transient) behind "encryption
    failed"; keeping the original lets the caller re-raise it unchanged.
    """

    def __init__(self, sink: Any) -> None:
        self._sink = sink
        self.error: BaseException | None = None

    def write(self, data: Any) -> int:
        try:
            return int(self._sink.write(data))
        except BaseException as error:
            if self.error is None:
                self.error = error
            raise

    def flush(self) -> None:
        try:
            self._sink.flush()
        except BaseException as error:
            if self.error is None:
                self.error = error
            raise


class EncryptingWriter(io.RawIOBase):
    """Write plaintext to it; age ciphertext goes to ``sink`` (written from a thread).

    A failure of ``sink`` itself (a StorageError, an OSError) comes out of ``write`` or
    ``close`` unchanged; only a failure of the encryption becomes an EncryptionError.
    """

    def __init__(self, sink: Any, recipients: list[Any]) -> None:
        read_end, write_end = os.pipe()
        self._pipe = os.fdopen(write_end, "wb", buffering=1 << 20)
        self._error: BaseException | None = None
        watched = _WatchedSink(sink)

        def run() -> None:
            with os.fdopen(read_end, "rb") as source:
                try:
                    pyrage.encrypt_io(source, watched, recipients)
                except BaseException as error:  # reported by close()
                    self._error = watched.error or error

        self._thread = threading.Thread(target=run, name="age-encrypt", daemon=True)
        self._thread.start()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        try:
            self._pipe.write(data)
        except BrokenPipeError:
            self._finish()
            raise EncryptionError("encryption stopped early", stage="store") from None
        return len(data)

    def close(self) -> None:
        if not self.closed:
            with contextlib.suppress(BrokenPipeError):
                self._pipe.close()
            self._finish()
        super().close()

    def _finish(self) -> None:
        self._thread.join()
        if self._error is not None:
            error, self._error = self._error, None
            if isinstance(error, (OSError, BakupError)):
                raise error  # a storage failure, reported as such by the pipeline
            raise EncryptionError(f"encryption failed: {error}", stage="store") from None


class DecryptingReader(io.RawIOBase):
    """Read plaintext from the age ciphertext in ``source`` (decrypted on a thread)."""

    def __init__(self, source: BinaryIO, identities: list[Any]) -> None:
        read_end, write_end = os.pipe()
        self._pipe = io.BufferedReader(io.FileIO(read_end, "rb"), buffer_size=1 << 20)
        self._error: BaseException | None = None

        def run() -> None:
            with os.fdopen(write_end, "wb") as sink:
                try:
                    pyrage.decrypt_io(source, sink, identities)
                except BrokenPipeError:
                    pass  # the reader stopped early
                except BaseException as error:
                    self._error = error

        self._thread = threading.Thread(target=run, name="age-decrypt", daemon=True)
        self._thread.start()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        count = self._pipe.readinto(buffer)
        if not count:
            self._thread.join()
            if self._error is not None:
                error, self._error = self._error, None
                raise EncryptionError(
                    "cannot decrypt the backup: ENCRYPTION_IDENTITY_FILE holds no key for its "
                    f"recipients ({str(error).splitlines()[0][:120]})",
                    stage="verify",
                ) from None
        return count or 0

    def close(self) -> None:
        if not self.closed:
            self._pipe.close()
            self._thread.join(timeout=10)
        super().close()


def open_archive(
    stored: BinaryIO, *, encrypted: bool, compression: Compression, identities: list[Any] | None
) -> BinaryIO:
    """Return the pg_dump archive inside a stored backup stream: decrypted if it is encrypted,
    then decompressed. Raises EncryptionError when it is encrypted and no identity is given."""
    if encrypted:
        if not identities:
            raise ConfigError(
                [
                    "this backup is encrypted: set ENCRYPTION_IDENTITY_FILE to a file holding "
                    "its age secret key"
                ]
            )
        stored = io.BufferedReader(DecryptingReader(stored, identities), 1 << 20)
    return compression.open_reader(stored)
