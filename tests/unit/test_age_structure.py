"""The structure check of age files made without the key: genuine files of every size at the
chunk boundaries pass, damaged headers and payloads do not."""

from __future__ import annotations

import pyrage
import pytest

from bakup.verify import _check_age_payload, _parse_age_header

CHUNK = 64 * 1024


def encrypted(size: int, recipients: int = 1) -> bytes:
    keys = [pyrage.x25519.Identity.generate().to_public() for _ in range(recipients)]
    return pyrage.encrypt(b"\n" * size, keys)


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 7])
def test_genuine_age_files_of_any_size_pass(size: int) -> None:
    data = encrypted(size, recipients=3)
    header_size, recipients = _parse_age_header(data[: 64 * 1024])
    assert recipients == 3
    assert data[header_size - 48 : header_size].startswith(b"--- ")
    _check_age_payload(len(data) - header_size)


@pytest.mark.parametrize(
    ("damage", "phrase"),
    [
        (lambda data: data.replace(b"X25519 ", b"X25519 !", 1), "malformed share"),
        (lambda data: data.replace(b"-> ", b"->  ", 1), "stanza"),
        (lambda data: data.replace(b"\n--- ", b"\n---  ", 1), "MAC"),
        (lambda data: b"\n".join(data.split(b"\n")[:1] + data.split(b"\n")[2:]), "recipient"),
    ],
)
def test_damaged_headers_are_refused(damage, phrase: str) -> None:
    with pytest.raises(ValueError, match=phrase):
        _parse_age_header(damage(encrypted(100)))


def test_a_header_of_a_passphrase_file_names_no_x25519_recipient() -> None:
    with pytest.raises(ValueError, match="no X25519 recipient"):
        _parse_age_header(pyrage.passphrase.encrypt(b"data", "secret words"))


@pytest.mark.parametrize("size", [0, 16, 31, 16 + CHUNK + 16 + 5])
def test_payloads_that_cannot_be_whole_chunks_are_refused(size: int) -> None:
    with pytest.raises(ValueError, match="whole chunks"):
        _check_age_payload(size)
