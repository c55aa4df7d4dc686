"""Reads a pg_dump custom-format archive as it streams past and counts each table's rows.

The archive is a header, a table of contents (TOC) and then one data block per table, each a
sequence of length-prefixed chunks ended by a zero length. With pg_dump's compression off
(``--compress=0``, as bakup runs it) the chunks are COPY text; with pg_dump's default
(``-Fc`` alone, as older cron scripts ran it) each block's chunks are together one zlib stream
of that text, inflated here piece by piece so memory stays flat. COPY text has one line per row
(newlines inside values are escaped), so a table's row count is the number of newlines in it,
less the ``\\.`` end-of-data marker that pg_dump appends. Counting as the bytes pass gives exact
counts taken in the dump's own snapshot at no extra read of the database.

Archives whose data pg_dump compressed with lz4 or zstd (archive version 1.15 and later) are
refused: only pg_restore reads those.

Only what is needed to stay in step with the stream is decoded; the layout follows pg_dump's
``pg_backup_archiver.c`` and ``pg_backup_custom.c`` for archive versions 1.12 to 1.16.
"""

from __future__ import annotations

import functools
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

MAGIC = b"PGDMP"
FORMAT_CUSTOM = 1
BLOCK_DATA = 1
BLOCK_BLOBS = 3
END_OF_COPY = b"\\.\n\n\n"
OLDEST_VERSION = (1, 12)
NEWEST_VERSION = (1, 16)
# The compression-algorithm byte of archive version 1.15 and later (pg_compress_algorithm).
DATA_COMPRESSIONS = {0: "none", 1: "gzip", 2: "lz4", 3: "zstd"}
# Inflate at most this much at a time: a block of highly compressible rows stays small.
INFLATE_LIMIT = 256 * 1024


class ArchiveFormatError(ValueError):
    """The stream is not a custom-format archive bakup can read, or it is truncated."""


class _NeedMore(Exception):
    """Raised inside the parser when the buffer ends before the item being read."""


# The flag before a TOC entry's data offset (pg_backup_archiver.h): pg_dump writing to a pipe
# cannot seek back, so every entry with data says "not set"; a seekable copy says "set".
OFFSET_NOT_SET = 1
OFFSET_SET = 2
OFFSET_NO_DATA = 3


@dataclass(frozen=True)
class TocEntry:
    """One entry of the archive's table of contents, as far as bakup needs it: what object it
    is, who owns it, what it depends on, and where its data offset is written (a position in
    the archive, for patching a seekable copy)."""

    dump_id: int
    desc: str
    namespace: str
    tag: str
    owner: str
    dependencies: tuple[int, ...]
    offset_position: int
    offset_flag: int
    # Kept only for entries whose statement names a related object (SEQUENCE OWNED BY).
    definition: str = ""


@dataclass
class ArchiveSummary:
    """What the archive says about itself, and the rows counted per table."""

    archive_version: str = ""
    server_version: str = ""
    pg_dump_version: str = ""
    database: str = ""
    # How pg_dump compressed the data blocks inside the archive: "none" or "gzip" (zlib).
    data_compression: str = "none"
    row_counts: dict[str, int] = field(default_factory=dict)
    # The table of contents, in archive order.
    entries: list[TocEntry] = field(default_factory=list)
    # Where each data block (table data or large objects) starts in the archive, by dump id,
    # and how many bytes it takes.
    block_positions: dict[int, int] = field(default_factory=dict)
    block_sizes: dict[int, int] = field(default_factory=dict)
    large_objects: int = 0
    offset_size: int = 8

    def table_data_sizes(self) -> dict[str, int]:
        """Return the archive bytes of each table's data block, by ``schema.table``."""
        names = {
            entry.dump_id: f"{entry.namespace}.{entry.tag}" if entry.namespace else entry.tag
            for entry in self.entries
            if entry.desc == "TABLE DATA"
        }
        return {
            names[dump_id]: size for dump_id, size in self.block_sizes.items() if dump_id in names
        }

    def contents(self) -> dict[str, Any]:
        """Return what a manifest records of the archive's contents: its schemas and
        extensions, the number of large objects and each table's data bytes."""
        schemas = {entry.tag for entry in self.entries if entry.desc == "SCHEMA"}
        schemas |= {entry.namespace for entry in self.entries if entry.namespace}
        return {
            "schemas": sorted(schemas),
            "extensions": sorted(e.tag for e in self.entries if e.desc == "EXTENSION"),
            "large_objects": self.large_objects,
            "table_bytes": self.table_data_sizes(),
        }


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
    returns the summary. Both raise ArchiveFormatError for a stream that is not a
    custom-format archive with uncompressed or zlib-compressed data, whose compressed data
    does not inflate, or that stops in the middle of an item.
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
        self._inflater: zlib._Decompress | None = None
        self._inflated_tail = b""  # the last bytes of the block's text, to spot the marker
        self._inflated_size = 0
        self._consumed = 0  # archive bytes before the buffer's start
        self._block_start = 0  # where the current block started, in the archive
        self._block_id = 0

    @property
    def toc_read(self) -> bool:
        """Whether the header and table of contents have passed (``summary.entries`` whole)."""
        return self._state != "head"

    @property
    def current_table(self) -> str | None:
        """The table whose data is streaming past now (``schema.table``), if any."""
        return self._block_table if self._state == "data" else None

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
            self.summary.entries.clear()
            return
        # Until the head is whole nothing was taken off the buffer: positions are absolute.
        del self._buffer[: cursor.pos]
        self._consumed = cursor.pos
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
        self.summary.offset_size = self._offset_size
        cursor.int_size = self._int_size
        if cursor.byte() != FORMAT_CUSTOM:
            raise ArchiveFormatError("the archive is not in pg_dump's custom format (-Fc)")
        # 1.15 added an algorithm byte (0 is none); before it, a zlib level (0 is none, -1
        # zlib's default level, which is what pg_dump -Fc used when given no -Z).
        if (major, minor) >= (1, 15):
            algorithm = cursor.byte()
            compression = DATA_COMPRESSIONS.get(algorithm)
            if compression is None:
                raise ArchiveFormatError(f"unknown data compression {algorithm} in the header")
        else:
            compression = "none" if cursor.integer() == 0 else "gzip"
        if compression not in ("none", "gzip"):
            raise ArchiveFormatError(
                f"pg_dump compressed this archive's data with {compression}: bakup cannot "
                "count its rows; only pg_restore can check such an archive"
            )
        self.summary.data_compression = compression
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
            definition = cursor.string() or ""
            cursor.string()  # drop statement
            cursor.string()  # copy statement
            namespace = cursor.string() or ""
            cursor.string()  # tablespace
            if version >= (1, 14):
                cursor.string()  # table access method
            if version >= (1, 16):
                cursor.integer()  # relkind
            owner = cursor.string() or ""
            cursor.string()  # "false": the retired WITH OIDS flag
            dependencies = []
            while (dependency := cursor.string()) is not None:  # ended by a null string
                if dependency.isdigit():
                    dependencies.append(int(dependency))
            offset_position = cursor.pos
            flag = cursor.take(1 + self._offset_size)[0]  # data offset: a flag and the offset
            self.summary.entries.append(
                TocEntry(
                    dump_id=dump_id,
                    desc=desc,
                    namespace=namespace,
                    tag=tag,
                    owner=owner,
                    dependencies=tuple(dependencies),
                    offset_position=offset_position,
                    offset_flag=flag,
                    definition=definition if desc == "SEQUENCE OWNED BY" else "",
                )
            )
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
                self._block_start = self._consumed + pos
                self._block_id = dump_id
                self.summary.block_positions[dump_id] = self._block_start
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
                if self.summary.data_compression == "none":
                    pos, newlines, ended = scan_data(buffer, pos, self._int_size)
                    self._block_newlines += newlines
                else:
                    pos, payload, ended = gather_chunks(buffer, pos, self._int_size)
                    self._inflate(payload)
                if not ended:  # the buffer ended inside the block
                    break
                if self.summary.data_compression != "none":
                    self._end_inflating()
                self._end_data_block(self._block_newlines)
                self._end_block(pos)
            elif state == "blob-oid":
                if end - pos < header:
                    break
                oid = int.from_bytes(buffer[pos + 1 : pos + header], "little")
                pos += header
                if oid:
                    self.summary.large_objects += 1
                    self._state = "blob-data"
                else:
                    self._end_block(pos)
                    self._state = "block"
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
        self._consumed += pos

    def _end_block(self, pos: int) -> None:
        """Record the size of the block that ends at ``pos`` in the buffer."""
        self.summary.block_sizes[self._block_id] = self._consumed + pos - self._block_start

    def _inflate(self, payload: bytes) -> None:
        """Inflate the next compressed bytes of a data block and count the newlines in them."""
        data = payload
        while data:
            if self._inflater is None:
                # 32 added to the window bits accepts a zlib or a gzip header alike.
                self._inflater = zlib.decompressobj(zlib.MAX_WBITS | 32)
            inflater = self._inflater
            try:
                text = inflater.decompress(data, INFLATE_LIMIT)
            except zlib.error as error:
                raise ArchiveFormatError(
                    f"a table's compressed data does not inflate ({error})"
                ) from None
            self._count_text(text)
            data = inflater.unconsumed_tail
            if inflater.eof:
                # One stream per block is what pg_dump writes; should another follow, read
                # it the same way rather than drop its rows.
                data = inflater.unused_data + data
                self._inflater = None

    def _count_text(self, text: bytes) -> None:
        self._block_newlines += text.count(b"\n")
        self._inflated_size += len(text)
        keep = len(END_OF_COPY) + 1
        self._inflated_tail = (self._inflated_tail + text[-keep:])[-keep:]

    def _end_inflating(self) -> None:
        """At a compressed block's end: check its stream was whole, take off the marker."""
        inflater, self._inflater = self._inflater, None
        if inflater is not None:
            # Output held back by the per-call limit comes out here, then the stream must
            # have ended: a block cut short inside its zlib stream is a corrupt archive.
            try:
                while not inflater.eof:
                    text = inflater.decompress(inflater.unconsumed_tail, INFLATE_LIMIT)
                    if not text:
                        break
                    self._count_text(text)
            except zlib.error as error:
                raise ArchiveFormatError(
                    f"a table's compressed data does not inflate ({error})"
                ) from None
            if not inflater.eof:
                raise ArchiveFormatError("a table's compressed data ends before its stream does")
        # Compressed, the end-of-data marker is the text's last line rather than a chunk of
        # its own. A COPY row cannot be "\\." alone (a backslash in a value is doubled), so a
        # marker at the start of a line is pg_dump's and its three newlines are no rows.
        tail, size = self._inflated_tail, self._inflated_size
        if tail.endswith(END_OF_COPY) and (size == len(END_OF_COPY) or tail[0:1] == b"\n"):
            self._block_newlines -= 3
        self._inflated_tail = b""
        self._inflated_size = 0

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


def gather_chunks_python(buffer: bytearray, pos: int, int_size: int) -> tuple[int, bytes, bool]:
    """Walk a data block's chunks from ``pos`` and join their payloads (compressed data).

    Given the buffer, where the next chunk header starts and the archive's int size; returns
    the position reached, the payloads of the whole chunks in the buffer joined together and
    whether the block's end was reached (else the buffer ended first). ``bakup._rowscan``
    does the same in C with one copy.
    """
    header = 1 + int_size
    end = len(buffer)
    unpack_length = _length_reader(int_size)
    pieces: list[bytearray] = []
    while end - pos >= header:
        (length,) = unpack_length(buffer, pos)
        start = pos + header
        if length == 0:
            return start, b"".join(pieces), True
        if end - start < length:
            break
        pieces.append(buffer[start : start + length])
        pos = start + length
    return pos, b"".join(pieces), False


try:
    from bakup._rowscan import gather_chunks, scan_data
except ImportError:  # not compiled (no C compiler at install time): same result, slower
    scan_data = scan_data_python
    gather_chunks = gather_chunks_python


def count_rows(archive: bytes) -> ArchiveSummary:
    """Return the summary of a whole archive held in memory (for tests and small files)."""
    counter = RowCounter()
    counter.feed(archive)
    return counter.finish()
