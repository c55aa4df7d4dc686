"""A storage failure under encryption stays a storage failure; only age errors are
encryption errors."""

from __future__ import annotations

import pyrage
import pytest

from bakup.encryption import EncryptingWriter, EncryptionError
from bakup.errors import StorageError


class FailingSink:
    """A storage writer that fails on its first write."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def write(self, data: bytes) -> int:
        raise self.error

    def flush(self) -> None:
        pass


def recipients() -> list[object]:
    return [pyrage.x25519.Identity.generate().to_public()]


def write_until_failure(writer: EncryptingWriter) -> None:
    """Write enough plaintext that age must flush ciphertext to the sink, then close."""
    for _ in range(64):
        writer.write(b"x" * 65536)
    writer.close()


def test_a_transient_storage_error_comes_out_unchanged() -> None:
    original = StorageError("upload to s3://b/x failed: timed out", stage="store")
    writer = EncryptingWriter(FailingSink(original), recipients())
    with pytest.raises(StorageError) as raised:
        write_until_failure(writer)
    assert raised.value is original
    assert raised.value.transient is True and raised.value.stage == "store"
    assert not isinstance(raised.value, EncryptionError)


def test_an_os_error_of_the_sink_comes_out_unchanged() -> None:
    writer = EncryptingWriter(FailingSink(OSError(28, "No space left on device")), recipients())
    with pytest.raises(OSError) as raised:
        write_until_failure(writer)
    assert raised.value.errno == 28


def test_a_failure_of_age_itself_is_an_encryption_error() -> None:
    class NotARecipient:
        pass

    writer = EncryptingWriter(FailingSink(AssertionError("never written")), [NotARecipient()])
    with pytest.raises(EncryptionError, match="encryption failed"):
        write_until_failure(writer)
