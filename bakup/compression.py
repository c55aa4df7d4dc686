"""Compression registry: each algorithm declares its name, file extension and magic bytes, and
opens streaming writers and readers over a file object.

gzip is written by ISA-L (``isal``), several times faster than zlib's deflate at a similar
ratio, on its own thread so compression overlaps reading pg_dump; its output is a standard gzip
member that plain ``gunzip`` reads. zstd goes through ``zstandard``, which also compresses on
worker threads when asked.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, Protocol

import zstandard
from isal import igzip_threaded

if TYPE_CHECKING:
    from typing_extensions import Buffer


class Writable(Protocol):
    """A binary stream that can be written to and closed."""

    def write(self, data: bytes) -> int | None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Compression:
    """One algorithm: how to name, recognise, write and read its streams."""

    name: str
    extension: str
    magic: bytes
    default_level: int
    levels: range
    _open_writer: Callable[[BinaryIO, int], Writable]
    _open_reader: Callable[[BinaryIO], BinaryIO]

    def open_writer(self, sink: BinaryIO, level: int | None = None) -> Writable:
        """Return a stream that compresses what is written to it into ``sink``.

        Given a writable binary file object and an optional level; closing the returned stream
        writes the trailer and flushes, but leaves ``sink`` open.
        """
        return self._open_writer(sink, self.default_level if level is None else level)

    def open_reader(self, source: BinaryIO) -> BinaryIO:
        """Return a stream of the decompressed bytes of ``source`` (a readable binary file)."""
        return self._open_reader(source)


class _Passthrough(io.RawIOBase):
    """A writer that hands bytes straight to its sink: the ``none`` algorithm."""

    def __init__(self, sink: BinaryIO) -> None:
        self._sink = sink

    def writable(self) -> bool:
        return True

    def write(self, data: Buffer) -> int:
        self._sink.write(data)
        return memoryview(data).nbytes


def _gzip_writer(sink: BinaryIO, level: int) -> Writable:
    # threads=1 runs ISA-L deflate on a worker thread, which releases the GIL: the main
    # thread goes on reading pg_dump while the previous block is compressed.
    writer: Writable = igzip_threaded.open(sink, "wb", compresslevel=level, threads=1)
    return writer


def _gzip_reader(source: BinaryIO) -> BinaryIO:
    reader: BinaryIO = igzip_threaded.open(source, "rb", threads=1)
    return reader


def _zstd_writer(sink: BinaryIO, level: int) -> Writable:
    # Two worker threads: each holds its own window and buffers (about 40 MB at level 3), so
    # one per core would grow memory with the machine past the 150 MB budget, and a third
    # thread is no faster while pg_dump and the server need the other cores.
    compressor = zstandard.ZstdCompressor(level=level, threads=min(2, os.cpu_count() or 1))
    return compressor.stream_writer(sink, closefd=False)


def _zstd_reader(source: BinaryIO) -> BinaryIO:
    reader = zstandard.ZstdDecompressor().stream_reader(
        source, read_across_frames=True, closefd=False
    )
    return io.BufferedReader(reader, buffer_size=1 << 20)


REGISTRY: dict[str, Compression] = {
    "gzip": Compression("gzip", ".gz", b"\x1f\x8b", 2, range(0, 4), _gzip_writer, _gzip_reader),
    "zstd": Compression(
        "zstd", ".zst", b"\x28\xb5\x2f\xfd", 3, range(1, 23), _zstd_writer, _zstd_reader
    ),
    "none": Compression(
        "none",
        "",
        b"",
        0,
        range(0, 1),
        lambda sink, _level: _Passthrough(sink),
        lambda source: source,
    ),
}


def get_compression(name: str) -> Compression:
    """Return the registered algorithm called ``name``; raises KeyError for an unknown one."""
    return REGISTRY[name]


def detect_compression(head: bytes) -> Compression:
    """Return the algorithm whose magic bytes start ``head`` (``none`` when none matches)."""
    for compression in REGISTRY.values():
        if compression.magic and head.startswith(compression.magic):
            return compression
    return REGISTRY["none"]
