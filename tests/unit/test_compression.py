"""The compression registry: round trips, standard formats, magic bytes."""

from __future__ import annotations

import gzip
import io
import os
import shutil
import subprocess

import pytest

from bakup.compression import REGISTRY, detect_compression, get_compression

TEXT = b"".join(
    b"%d\tcustomer %d\tnote about order %d\n" % (n, n % 97, n * 7) for n in range(60000)
)
RANDOM = os.urandom(1 << 20)


class Sink(io.BytesIO):
    """A sink that remembers whether someone closed it."""

    def close(self) -> None:  # keep the bytes readable; just record the call
        self.was_closed = True


@pytest.mark.parametrize("name", sorted(REGISTRY))
@pytest.mark.parametrize("payload", [TEXT, RANDOM, b""], ids=["text", "random", "empty"])
def test_each_algorithm_round_trips_and_leaves_the_sink_open(name: str, payload: bytes) -> None:
    compression = get_compression(name)
    sink = Sink()
    writer = compression.open_writer(sink)
    for start in range(0, len(payload), 100_000):
        writer.write(payload[start : start + 100_000])
    writer.close()
    assert not getattr(sink, "was_closed", False)
    stored = sink.getvalue()
    reader = compression.open_reader(io.BytesIO(stored))
    assert reader.read() == payload
    if payload and compression.magic:
        assert stored.startswith(compression.magic)
        assert detect_compression(stored[:8]) is compression


def test_gzip_output_is_a_standard_gzip_stream() -> None:
    sink = io.BytesIO()
    writer = get_compression("gzip").open_writer(sink)
    writer.write(TEXT)
    writer.close()
    assert gzip.decompress(sink.getvalue()) == TEXT
    if shutil.which("gunzip"):
        result = subprocess.run(
            ["gunzip", "-c"], input=sink.getvalue(), capture_output=True, check=True
        )
        assert result.stdout == TEXT


def test_compressed_text_is_smaller_and_extensions_are_the_scripts() -> None:
    assert {name: c.extension for name, c in REGISTRY.items()} == {
        "gzip": ".gz",
        "zstd": ".zst",
        "none": "",
    }
    for name in ("gzip", "zstd"):
        sink = io.BytesIO()
        writer = get_compression(name).open_writer(sink)
        writer.write(TEXT)
        writer.close()
        assert len(sink.getvalue()) < len(TEXT) / 3


def test_unknown_data_is_detected_as_uncompressed() -> None:
    assert detect_compression(b"PGDMP\x01\x0e").name == "none"
