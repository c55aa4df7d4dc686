"""read_ahead: a stream's contents in order, its error where it happened, and a thread that
stops when the consumer does."""

from __future__ import annotations

import io
import threading

import pytest

from bakup.read_ahead import read_ahead


class FailingStream(io.RawIOBase):
    """Yields ``good`` bytes, then raises OSError."""

    def __init__(self, good: bytes) -> None:
        self.good = io.BytesIO(good)

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self.good.read(size)
        if not data:
            raise OSError("the store went away")
        return data


def test_the_pieces_are_the_stream_in_order() -> None:
    data = bytes(range(256)) * 1000
    assert b"".join(read_ahead(io.BytesIO(data), 1000, depth=3)) == data


def test_an_error_is_raised_after_the_pieces_read_before_it() -> None:
    pieces = []
    with pytest.raises(OSError, match="the store went away"):
        for piece in read_ahead(FailingStream(b"x" * 2500), 1000):  # type: ignore[arg-type]
            pieces.append(piece)
    assert b"".join(pieces) == b"x" * 2500


def test_closing_early_stops_the_reading_thread() -> None:
    before = threading.active_count()
    pieces = read_ahead(io.BytesIO(b"y" * 1_000_000), 10, depth=2)
    assert next(pieces) == b"y" * 10
    pieces.close()
    assert threading.active_count() == before
