"""Reads a pg_dump custom-format archive as it streams past and counts each table's rows.

With pg_dump's compression off, the archive is a header, a table of contents (TOC) and then one
data block per table, each a sequence of length-prefixed chunks of COPY text. COPY text has one
line per row (newlines inside values are escaped), so a table's row count is the number of
newlines in its chunks, less the ``\\.`` end-of-data marker that pg_dump appends. Counting as the
bytes pass gives exact counts taken in the dump's own snapshot at no extra read of the database.

Only what is needed to stay in step with the stream is decoded; the layout follows pg_dump's
``pg_backup_archiver.c`` and ``pg_backup_custom.c`` for archive versions 1.12 to 1.16.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

MAGIC = b"PGDMP"
FORMAT_CUSTOM = 1
BLOCK_DATA = 1
BLOCK_BLOBS = 3
END_OF_COPY = b"\\.\n\n\n"
OLDEST_VERSION = (1, 12)
NEWEST_VERSION = (1, 16)


class ArchiveFormatError(ValueError):
    """The stream is not an uncompressed custom-format archive, or it is truncated."""


class _NeedMore(Exception):
    """Raised inside the parser when the buffer ends before the item being read."""


@dataclass
class ArchiveSummary:
    """What the archive says about itself, and the rows counted per table."""

    archive_version: str = ""
    server_version: str = ""
    pg_dump_version: str = ""
    database: str = ""
    row_counts: dict[str, int] = field(default_factory=dict)


class _Cursor:
    """Reads archive primitives from a buffer, raising _NeedMore at its end."""

    def __init__(self, buffer: bytearray | bytes, int_size: int = 4) -> None:
        self.buffer = buffer
        self.pos = 0
        self.int_size = int_size

    def take(self, count: int) -> bytes:
        end = self.pos + count
        if end > len(self.buffer):
            raise _NeedMore
        data = bytes(self.buffer[self.pos : end])
        self.pos = end
        return data

    def byte(self) -> int:
        return self.take(1)[0]

    def integer(self) -> int:
        # pg_dump writes a sign byte, then the magnitude least significant byte first.
        raw = self.take(1 + self.int_size)
        value = int.from_bytes(raw[1:], "little")
        return -value if raw[0] else value

    def string(self) -> str | None:
        length = self.integer()
        if length < 0:
            return None
        return self.take(length).decode("utf-8", "replace")


class RowCounter:
    """Feed it the archive's bytes in order; it counts the rows of every table's data.

    ``feed`` takes chunks of any size; ``finish`` checks the stream ended between blocks and
    returns the summary. Both raise ArchiveFormatError for a stream that is not an
    uncompressed custom-format archive or that stops in the middle of an item.
    """

    def __init__(self) -> None:
        self.summary = ArchiveSummary()
        self._buffer = bytearray()
        self._state = "head"
        self._needed = 0  # bytes to wait for before retrying the header and TOC
        self._tables: dict[int, str] = {}
        self._block_table: str | None = None
        self._block_newlines = 0
        self._int_size = 4
        self._offset_size = 8

    def feed(self, data: bytes) -> None:
        """Take the next bytes of the archive."""
        self._buffer += data
        if self._state == "head":
            if len(self._buffer) < self._needed:
                return
            self._parse_head()
            if self._state == "head":
                return
        self._parse_blocks()

    def finish(self) -> ArchiveSummary:
        """Return the summary; raises ArchiveFormatError if the stream ended mid-item."""
        if self._state == "head":
            self._needed = 0
            self._parse_head()
            if self._state == "head":
                raise ArchiveFormatError("the archive ends inside its header or table of contents")
            self._parse_blocks()
        if self._state != "block" or self._buffer:
            raise ArchiveFormatError("the archive ends inside a data block (truncated dump)")
        return self.summary

    # -- header and table of contents -------------------------------------------------

    def _parse_head(self) -> None:
        cursor = _Cursor(self._buffer)
        try:
            self._read_header(cursor)
            self._read_toc(cursor)
        except _NeedMore:
            # Retrying costs a re-parse of the TOC; waiting for twice as much keeps the
            # total work linear in the TOC's size.
            self._needed = max(2 * len(self._buffer), 64 * 1024)
            self._tables.clear()
            return
        del self._buffer[: cursor.pos]
        self._state = "block"

    def _read_header(self, cursor: _Cursor) -> None:
        if cursor.take(5) != MAGIC:
            raise ArchiveFormatError("not a pg_dump custom-format archive (no PGDMP header)")
        major, minor, revision = cursor.byte(), cursor.byte(), cursor.byte()
        if not OLDEST_VERSION <= (major, minor) <= NEWEST_VERSION:
            raise ArchiveFormatError(f"unsupported archive version {major}.{minor}")
        self.summary.archive_version = f"{major}.{minor}.{revision}"
        self._int_size = cursor.byte()
        self._offset_size = cursor.byte()
        cursor.int_size = self._int_size
        if cursor.byte() != FORMAT_CUSTOM:
            raise ArchiveFormatError("the archive is not in pg_dump's custom format (-Fc)")
        # 1.15 added an algorithm byte (0 is none); before it, a zlib level (0 is none).
        compressed = (cursor.byte() if (major, minor) >= (1, 15) else cursor.integer()) != 0
        if compressed:
            raise ArchiveFormatError("pg_dump compressed the archive itself; run it with -Z0")
        for _ in range(7):  # creation time: sec, min, hour, mday, mon, year, isdst
            cursor.integer()
        self.summary.database = cursor.string() or ""
        self.summary.server_version = cursor.string() or ""
        self.summary.pg_dump_version = cursor.string() or ""

    def _read_toc(self, cursor: _Cursor) -> None:
        version = tuple(int(part) for part in self.summary.archive_version.split(".")[:2])
        for _ in range(cursor.integer()):
            dump_id = cursor.integer()
            cursor.integer()  # has a data dumper
            cursor.string()  # table oid
            cursor.string()  # oid
            tag = cursor.string() or ""
            desc = cursor.string() or ""
            cursor.integer()  # section
            for _field in ("defn", "drop", "copy", "namespace"):
                value = cursor.string()
            namespace = value or ""
            cursor.string()  # tablespace
            if version >= (1, 14):
                cursor.string()  # table access method
            if version >= (1, 16):
                cursor.integer()  # relkind
            cursor.string()  # owner
            cursor.string()  # "false": the retired WITH OIDS flag
            while cursor.string() is not None:  # dependencies, ended by a null string
                pass
            cursor.take(1 + self._offset_size)  # data offset: a flag and the offset
            if desc == "TABLE DATA":
                self._tables[dump_id] = f"{namespace}.{tag}" if namespace else tag

    # -- data blocks ----------------------------------------------------------------

    def _parse_blocks(self) -> None:
        buffer = self._buffer
        pos = 0
        end = len(buffer)
        header = 1 + self._int_size
        while True:
            state = self._state
            if state == "block":
                if end - pos < 1 + header:
                    break
                kind = buffer[pos]
                dump_id = int.from_bytes(buffer[pos + 2 : pos + 1 + header], "little")
                pos += 1 + header
                if kind == BLOCK_DATA:
                    self._block_table = self._tables.get(dump_id)
                    self._block_newlines = 0
                    self._state = "data"
                elif kind == BLOCK_BLOBS:
                    self._state = "blob-oid"
                else:
                    raise ArchiveFormatError(f"unexpected block type {kind} in the archive")
            elif state == "data":
                pos, newlines, ended = scan_data(buffer, pos, self._int_size)
                self._block_newlines += newlines
                if not ended:  # the buffer ended inside the block
                    break
                self._end_data_block(self._block_newlines)
            elif state == "blob-oid":
                if end - pos < header:
                    break
                oid = int.from_bytes(buffer[pos + 1 : pos + header], "little")
                pos += header
                self._state = "blob-data" if oid else "block"
            else:  # blob-data: chunks of one large object, ended by a zero length
                if end - pos < header:
                    break
                length = int.from_bytes(buffer[pos + 1 : pos + header], "little")
                if end - pos - header < length:
                    break
                pos += header + length
                if length == 0:
                    self._state = "blob-oid"
        del buffer[:pos]

    def _end_data_block(self, newlines: int) -> None:
        if self._block_table is not None:
            self.summary.row_counts[self._block_table] = (
                self.summary.row_counts.get(self._block_table, 0) + newlines
            )
        self._block_table = None
        self._state = "block"


@functools.cache
def _length_reader(int_size: int) -> Callable[[bytearray, int], tuple[int]]:
    """Return a function reading a chunk length (sign byte skipped) at an offset of a buffer.

    struct does it in one C call for the usual 4- and 8-byte ints.
    """
    if int_size in (4, 8):
        return struct.Struct("<xI" if int_size == 4 else "<xQ").unpack_from

    def unpack(buffer: bytearray, offset: int) -> tuple[int]:
        return (int.from_bytes(buffer[offset + 1 : offset + 1 + int_size], "little"),)

    return unpack


def scan_data_python(buffer: bytearray, pos: int, int_size: int) -> tuple[int, int, bool]:
    """Walk a data block's chunks from ``pos`` and count the newlines (rows) in them.

    Given the buffer, where the next chunk header starts and the archive's int size; returns
    the position reached, the newlines counted and whether the block's end was reached (else
    the buffer ended first). One iteration per COPY row: ``bakup._rowscan`` does the same in
    C, about ten times faster, and is used when it was built.
    """
    header = 1 + int_size
    end = len(buffer)
    count = buffer.count
    unpack_length = _length_reader(int_size)
    newlines = 0
    while end - pos >= header:
        (length,) = unpack_length(buffer, pos)
        start = pos + header
        if length == 0:
            return start, newlines, True
        if end - start < length:
            break
        if not (length == 5 and buffer[start : start + 5] == END_OF_COPY):
            newlines += count(b"\n", start, start + length)  # the marker is not a row
        pos = start + length
    return pos, newlines, False


try:
    from bakup._rowscan import scan_data
except ImportError:  # not compiled (no C compiler at install time): same result, slower
    scan_data = scan_data_python


def count_rows(archive: bytes) -> ArchiveSummary:
    """Return the summary of a whole archive held in memory (for tests and small files)."""
    counter = RowCounter()
    counter.feed(archive)
    return counter.finish()
