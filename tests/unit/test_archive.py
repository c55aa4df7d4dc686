"""The archive reader: synthetic pg_dump custom-format archives of each version, fed in any
pieces, truncated, compressed; and the C and Python row scanners agreeing."""

from __future__ import annotations

import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bakup import archive
from bakup.archive import (
    ArchiveFormatError,
    RowCounter,
    count_rows,
    gather_chunks_python,
    scan_data_python,
)

END = b"\\.\n\n\n"


def pg_int(value: int) -> bytes:
    return (b"\x01" if value < 0 else b"\x00") + abs(value).to_bytes(4, "little")


def pg_str(text: str | None) -> bytes:
    if text is None:
        return pg_int(-1)
    raw = text.encode()
    return pg_int(len(raw)) + raw


def toc_entry(version: tuple[int, int], dump_id: int, desc: str, namespace: str, tag: str) -> bytes:
    entry = pg_int(dump_id) + pg_int(1) + pg_str("0") + pg_str("0") + pg_str(tag) + pg_str(desc)
    entry += pg_int(3) + pg_str("") + pg_str("") + pg_str("COPY ...") + pg_str(namespace)
    entry += pg_str("")
    if version >= (1, 14):
        entry += pg_str("heap")
    if version >= (1, 16):
        entry += pg_int(ord("r"))
    entry += pg_str("owner") + pg_str("false") + pg_str("1") + pg_str(None)
    return entry + b"\x01" + bytes(8)  # offset flag "not set" and an 8-byte offset


def data_block(dump_id: int, rows: list[bytes], *, chunking: int = 1) -> bytes:
    """A data block: rows in chunks of ``chunking`` rows, then pg_dump's end marker."""
    block = b"\x01" + pg_int(dump_id)
    for index in range(0, len(rows), chunking):
        payload = b"".join(rows[index : index + chunking])
        block += pg_int(len(payload)) + payload
    return block + pg_int(len(END)) + END + pg_int(0)


def zlib_data_block(dump_id: int, rows: list[bytes], *, chunk_size: int = 4096) -> bytes:
    """A data block as pg_dump -Fc writes it: the rows and the end marker as one zlib stream,
    cut into chunks of ``chunk_size`` compressed bytes."""
    stream = zlib.compress(b"".join(rows) + END, 6)
    block = b"\x01" + pg_int(dump_id)
    for index in range(0, len(stream), chunk_size):
        piece = stream[index : index + chunk_size]
        block += pg_int(len(piece)) + piece
    return block + pg_int(0)


def blobs_block(dump_id: int, blobs: dict[int, bytes]) -> bytes:
    block = b"\x03" + pg_int(dump_id)
    for oid, content in blobs.items():
        block += pg_int(oid) + pg_int(len(content)) + content + pg_int(0)
    return block + pg_int(0)


def make_archive(
    version: tuple[int, int] = (1, 14),
    tables: dict[str, list[bytes]] | None = None,
    *,
    compressed: bool = False,
    level: int = 6,
    algorithm: int = 1,
    blobs: dict[int, bytes] | None = None,
) -> bytes:
    """A whole archive; ``compressed`` writes the data blocks as zlib streams, and gives the
    header ``level`` (before 1.15) or ``algorithm`` (1.15 and later)."""
    tables = {"public.a": [b"1\tx\n"]} if tables is None else tables
    head = b"PGDMP" + bytes([version[0], version[1], 0, 4, 8, 1])
    if version >= (1, 15):
        head += bytes([algorithm if compressed else 0])
    else:
        head += pg_int(level if compressed else 0)
    head += b"".join(pg_int(value) for value in (0, 0, 2, 24, 10, 126, 0))
    head += pg_str("shop") + pg_str("16.4") + pg_str("16.4")
    entries = [(index + 1, name) for index, name in enumerate(tables)]
    toc = pg_int(len(entries) + 2) + toc_entry(version, 100, "TABLE", "public", "a")
    for dump_id, name in entries:
        namespace, _, tag = name.partition(".")
        toc += toc_entry(version, dump_id, "TABLE DATA", namespace, tag)
    toc += toc_entry(version, 99, "BLOBS", "", "BLOBS")
    write_block = zlib_data_block if compressed else data_block
    body = b"".join(write_block(dump_id, tables[name]) for dump_id, name in entries)
    if blobs:
        body += blobs_block(99, blobs)
    return head + toc + body


@pytest.mark.parametrize("version", [(1, 14), (1, 15), (1, 16)])
def test_rows_are_counted_per_table_for_each_archive_version(version: tuple[int, int]) -> None:
    tables = {
        "public.a": [b"%d\tname\n" % n for n in range(1000)],
        "sales.orders": [b"1\tmulti\\nline\\\\text\n", b"2\t\\.\n"],
        "public.empty": [],
    }
    summary = count_rows(make_archive(version, tables))
    assert summary.row_counts == {"public.a": 1000, "sales.orders": 2, "public.empty": 0}
    assert (summary.database, summary.server_version, summary.pg_dump_version) == (
        "shop",
        "16.4",
        "16.4",
    )
    assert summary.archive_version == f"{version[0]}.{version[1]}.0"


def test_large_objects_with_newlines_and_header_like_bytes_are_skipped() -> None:
    blob = b"\n\x00\x01\x00\x00\x00\n" * 1000 + b"\x00\x00\x00\x00\x00"
    summary = count_rows(make_archive(tables={"public.a": [b"1\n", b"2\n"]}, blobs={16400: blob}))
    assert summary.row_counts == {"public.a": 2}


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_any_split_of_the_stream_gives_the_same_counts(data: st.DataObject) -> None:
    rows = [b"%d\t%s\n" % (n, b"x" * (n % 300)) for n in range(500)]
    whole = make_archive((1, 15), {"public.a": rows, "public.b": rows[:7]}, blobs={1: b"\n" * 99})
    cuts = sorted(data.draw(st.lists(st.integers(0, len(whole)), max_size=30)))
    counter = RowCounter()
    for start, stop in zip([0, *cuts], [*cuts, len(whole)], strict=True):
        counter.feed(whole[start:stop])
    assert counter.finish().row_counts == {"public.a": 500, "public.b": 7}


@pytest.mark.parametrize("size", [1, 7, 4096])
def test_feeding_in_small_pieces_gives_the_same_counts(size: int) -> None:
    whole = make_archive(tables={"public.a": [b"row\n"] * 300})
    counter = RowCounter()
    for index in range(0, len(whole), size):
        counter.feed(whole[index : index + size])
    assert counter.finish().row_counts == {"public.a": 300}


@pytest.mark.parametrize(
    ("cut", "phrase"),
    [(10, "header or table of contents"), (200, "header or table of contents"), (-20, "truncated")],
)
def test_truncated_archives_are_rejected(cut: int, phrase: str) -> None:
    whole = make_archive(tables={"public.a": [b"row\n"] * 100})
    with pytest.raises(ArchiveFormatError, match=phrase):
        count_rows(whole[:cut])


TABLES = {
    "public.a": [b"%d\tname %d\n" % (n, n * n) for n in range(5000)],
    "sales.orders": [b"1\tmulti\\nline\\\\text\n", b"2\t\\.\n"],
    "public.empty": [],
    "public.no_columns": [b"\n"] * 4,
}
COUNTS = {"public.a": 5000, "sales.orders": 2, "public.empty": 0, "public.no_columns": 4}


@pytest.mark.parametrize(("version", "level"), [((1, 14), -1), ((1, 14), 6), ((1, 15), 6)])
def test_rows_are_counted_when_pg_dump_compressed_the_data_with_zlib(
    version: tuple[int, int], level: int
) -> None:
    summary = count_rows(make_archive(version, TABLES, compressed=True, level=level))
    assert summary.row_counts == COUNTS
    assert summary.data_compression == "gzip"


def test_an_uncompressed_archive_says_so() -> None:
    assert count_rows(make_archive((1, 14))).data_compression == "none"


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_any_split_of_a_compressed_stream_gives_the_same_counts(data: st.DataObject) -> None:
    whole = make_archive((1, 14), TABLES, compressed=True, blobs={7: b"\n" * 50})
    cuts = sorted(data.draw(st.lists(st.integers(0, len(whole)), max_size=30)))
    counter = RowCounter()
    for start, stop in zip([0, *cuts], [*cuts, len(whole)], strict=True):
        counter.feed(whole[start:stop])
    assert counter.finish().row_counts == COUNTS


def test_a_block_of_rows_that_inflates_far_beyond_the_limit_is_counted() -> None:
    rows = [b"x" * 1000 + b"\n"] * 2000  # 2 MB of text in a few kB of zlib
    assert count_rows(make_archive((1, 14), {"public.a": rows}, compressed=True)).row_counts == {
        "public.a": 2000
    }


@pytest.mark.parametrize(("algorithm", "name"), [(2, "lz4"), (3, "zstd")])
def test_lz4_and_zstd_data_are_refused_naming_pg_restore(algorithm: int, name: str) -> None:
    archive_bytes = make_archive((1, 15), compressed=True, algorithm=algorithm)
    with pytest.raises(ArchiveFormatError, match=f"with {name}: .*only pg_restore"):
        count_rows(archive_bytes)


def test_a_compressed_block_cut_short_or_garbled_is_rejected() -> None:
    stream = zlib.compress(b"1\n2\n" + END)
    head = make_archive((1, 14), {"public.a": []}, compressed=True)
    head = head[: head.rindex(b"\x01" + pg_int(1))]  # up to the data block
    cut = head + b"\x01" + pg_int(1) + pg_int(len(stream) - 4) + stream[:-4] + pg_int(0)
    with pytest.raises(ArchiveFormatError, match="ends before its stream does"):
        count_rows(cut)
    garbled = head + b"\x01" + pg_int(1) + pg_int(len(stream)) + b"\xff" * len(stream)
    with pytest.raises(ArchiveFormatError, match="does not inflate"):
        count_rows(garbled + pg_int(0))


def test_something_else_than_an_archive_is_rejected() -> None:
    with pytest.raises(ArchiveFormatError, match="PGDMP"):
        count_rows(b"-- PostgreSQL database dump\n" * 10)


rows_strategy = st.lists(
    st.binary(max_size=300).map(lambda raw: raw.replace(b"\n", b"").replace(b"\x00", b"") + b"\n"),
    max_size=200,
)


@pytest.mark.skipif(archive.scan_data is scan_data_python, reason="C scanner not built")
@settings(max_examples=200, deadline=None)
@given(rows_strategy, st.integers(1, 5), st.integers(0, 50))
def test_the_c_scanner_and_the_python_scanner_agree(
    rows: list[bytes], chunking: int, cut: int
) -> None:
    block = data_block(1, rows, chunking=chunking)[5:]  # chunks only, after the block header
    buffer = bytearray(block[: max(0, len(block) - cut)])
    assert archive.scan_data(buffer, 0, 4) == scan_data_python(buffer, 0, 4)


@pytest.mark.skipif(archive.gather_chunks is gather_chunks_python, reason="C scanner not built")
@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=300), max_size=50), st.integers(0, 50))
def test_the_c_and_python_chunk_gatherers_agree(chunks: list[bytes], cut: int) -> None:
    block = b"".join(pg_int(len(chunk)) + chunk for chunk in chunks) + pg_int(0)
    buffer = bytearray(b"junk" + block[: max(0, len(block) - cut)])
    assert archive.gather_chunks(buffer, 4, 4) == gather_chunks_python(buffer, 4, 4)
