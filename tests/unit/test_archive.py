"""The archive reader: synthetic pg_dump custom-format archives of each version, fed in any
pieces, truncated, compressed; and the C and Python row scanners agreeing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bakup import archive
from bakup.archive import ArchiveFormatError, RowCounter, count_rows, scan_data_python

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
    blobs: dict[int, bytes] | None = None,
) -> bytes:
    tables = {"public.a": [b"1\tx\n"]} if tables is None else tables
    head = b"PGDMP" + bytes([version[0], version[1], 0, 4, 8, 1])
    if version >= (1, 15):
        head += bytes([1 if compressed else 0])
    else:
        head += pg_int(6 if compressed else 0)
    head += b"".join(pg_int(value) for value in (0, 0, 2, 24, 10, 126, 0))
    head += pg_str("shop") + pg_str("16.4") + pg_str("16.4")
    entries = [(index + 1, name) for index, name in enumerate(tables)]
    toc = pg_int(len(entries) + 2) + toc_entry(version, 100, "TABLE", "public", "a")
    for dump_id, name in entries:
        namespace, _, tag = name.partition(".")
        toc += toc_entry(version, dump_id, "TABLE DATA", namespace, tag)
    toc += toc_entry(version, 99, "BLOBS", "", "BLOBS")
    body = b"".join(data_block(dump_id, tables[name]) for dump_id, name in entries)
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


@pytest.mark.parametrize("version", [(1, 14), (1, 15)])
def test_an_archive_compressed_by_pg_dump_is_rejected(version: tuple[int, int]) -> None:
    with pytest.raises(ArchiveFormatError, match="-Z0"):
        count_rows(make_archive(version, compressed=True))


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
