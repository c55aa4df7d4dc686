"""Writing a deduplicated backup while pg_dump runs: cut, name, store what is new, index it.

The uncompressed archive is cut by content-defined chunking (FastCDC, from pyfastcdc), so an
inserted or deleted row changes only the chunk around it. Cuts are also forced where each
table's data block starts (the archive parser knows where, as it reads the same bytes just
before): a table's data then always starts a chunk, and growth in one table never shifts the
chunks of the next. Each chunk is named by its keyed hash; a chunk every destination already
holds is neither compressed, encrypted nor uploaded again. New ones are sealed and stored by a
few threads, with a bounded number in flight so memory stays flat.

When the stream ends, the backup's index (the chunk names and lengths, in order) is written,
compressed, to the backup's data file: what the lifecycle publishes and the manifest
describes. A chunk is stored before any index names it.
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import zstandard
from pyfastcdc import FastCDC

from bakup import failpoints
from bakup.archive import RowCounter
from bakup.dedup.chunks import ChunkStore, chunk_id, seal_chunk

INDEX_FORMAT = "bakup-dedup-index/1"
# Chunk sizes: pyfastcdc's average is avg + min. Small enough that a changed row costs little,
# large enough that a 3 GB dump is ~12 000 objects.
AVERAGE_SIZE = 192 * 1024
MIN_SIZE = 64 * 1024
MAX_SIZE = 1024 * 1024
# Cut a window once this much is buffered: the tail after the last cut carries over.
WINDOW = 8 * MAX_SIZE
UPLOAD_THREADS = 4
IN_FLIGHT = 16  # chunks being sealed or stored at once (at most MAX_SIZE each)


class _Sink(Protocol):
    def write(self, data: bytes) -> int: ...


@dataclass
class DedupStats:
    """What a deduplicated backup stored: chunks referenced, new chunks and their stored
    bytes, and the bytes of the archive (logical)."""

    chunks: int = 0
    new_chunks: int = 0
    new_bytes: int = 0
    logical_bytes: int = 0
    referenced_bytes: int = 0  # stored size of every chunk the backup references, once each

    def as_manifest(self) -> dict[str, int]:
        """The manifest's ``dedup`` record."""
        return {
            "chunks": self.chunks,
            "new_chunks": self.new_chunks,
            "new_bytes": self.new_bytes,
            "logical_bytes": self.logical_bytes,
            "referenced_bytes": self.referenced_bytes,
        }


class DedupWriter:
    """Takes the archive's bytes in order (after the row counter has seen them) and stores
    them as chunks; ``close`` writes the index to ``sink``.

    Given the sink of the backup's data file, the chunk store of every destination, the row
    counter fed with the same bytes, and age recipients (None: unencrypted). ``write`` and
    ``close`` raise StorageError when a chunk cannot be stored.
    """

    def __init__(
        self,
        sink: _Sink,
        stores: list[ChunkStore],
        counter: RowCounter,
        recipients: list[Any] | None,
    ) -> None:
        self.sink = sink
        self.stores = stores
        self.counter = counter
        self.recipients = recipients
        self.key = stores[0].key
        # What each destination holds now, with stored sizes: a chunk missing from one
        # destination is stored there even if another has it.
        self.held = [store.names() for store in stores]
        self.stats = DedupStats()
        self._chunker = FastCDC(AVERAGE_SIZE, min_size=MIN_SIZE, max_size=MAX_SIZE)
        self._buffer = bytearray()
        self._start = 0  # archive position of the buffer's first byte
        self._blocks_seen = 0
        self._boundaries: list[int] = []
        self._index: list[tuple[str, int]] = []
        self._queued: set[str] = set()
        self._pool = ThreadPoolExecutor(UPLOAD_THREADS, thread_name_prefix="bakup-chunks")
        self._slots = threading.BoundedSemaphore(IN_FLIGHT)
        self._futures: list[Future[None]] = []
        self._lock = threading.Lock()

    def write(self, data: bytes) -> int:
        """Take the next bytes of the archive; returns their length."""
        self._buffer += data
        self.stats.logical_bytes += len(data)
        self._learn_boundaries()
        self._cut(final=False)
        return len(data)

    def close(self) -> None:
        """Store what is left, wait for every chunk, and write the index."""
        try:
            self._learn_boundaries()
            self._cut(final=True)
            self._wait()
            for store in self.stores:
                store.sync()  # every chunk durable before an index names it
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)
        referenced = {name for name, _length in self._index}
        self.stats.referenced_bytes = sum(self.held[0].get(name, 0) for name in referenced)
        index = json.dumps(
            {"format": INDEX_FORMAT, "chunks": self._index}, separators=(",", ":")
        ).encode()
        # The index names chunks by keyed hashes and gives their lengths, nothing of the data:
        # it is stored unencrypted so that a collection of unreferenced chunks needs no key.
        failpoints.reach("chunks-stored")
        self.sink.write(zstandard.ZstdCompressor(level=3).compress(index))

    def abort(self) -> None:
        """Stop the upload threads without waiting for queued chunks (a failed backup)."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- cutting ----------------------------------------------------------------------

    def _learn_boundaries(self) -> None:
        """Note the data blocks the parser has found since last time."""
        positions = self.counter.summary.block_positions
        if len(positions) > self._blocks_seen:
            fresh = list(positions.values())[self._blocks_seen :]
            self._blocks_seen = len(positions)
            self._boundaries.extend(p for p in fresh if p > self._start)

    def _cut(self, *, final: bool) -> None:
        """Cut what is buffered into chunks, up to each known boundary, and store them."""
        while True:
            end = self._start + len(self._buffer)
            boundary = next((p for p in self._boundaries if p <= end), None)
            if boundary is not None:
                self._boundaries.remove(boundary)
                self._cut_segment(boundary - self._start, whole=True)
                continue
            if final:
                self._cut_segment(len(self._buffer), whole=True)
                return
            if len(self._buffer) >= WINDOW:
                self._cut_segment(len(self._buffer), whole=False)
            return

    def _cut_segment(self, length: int, *, whole: bool) -> None:
        """Chunk the buffer's first ``length`` bytes. ``whole``: they end at a boundary, so
        the last chunk is final; otherwise the last chunk may continue in later bytes and is
        kept for the next window."""
        if length <= 0:
            return
        view = memoryview(self._buffer)
        try:
            cuts = [(chunk.offset, chunk.length) for chunk in self._chunker.cut_buf(view[:length])]
            if not whole and len(cuts) > 1:
                cuts.pop()  # the tail: its end was forced by the window, not the content
            elif not whole:
                return  # one chunk so far: wait for more bytes
            consumed = 0
            for offset, size in cuts:
                with view[offset : offset + size] as piece:
                    self._emit(piece)
                consumed = offset + size
        finally:
            view.release()
        del self._buffer[:consumed]
        self._start += consumed

    # -- storing ----------------------------------------------------------------------

    def _emit(self, piece: memoryview) -> None:
        """Record a chunk in the index; store it where it is missing. Only a new chunk is
        copied out of the buffer (for the thread that stores it)."""
        name = chunk_id(self.key, piece)
        self._index.append((name, len(piece)))
        self.stats.chunks += 1
        missing = [i for i, held in enumerate(self.held) if name not in held]
        if not missing or name in self._queued:
            return
        self._queued.add(name)
        self._reap()
        self._slots.acquire()
        self._futures.append(self._pool.submit(self._store, name, bytes(piece), missing))

    def _store(self, name: str, data: bytes, missing: list[int]) -> None:
        try:
            blob = seal_chunk(data, self.recipients)
            for position in missing:
                self.stores[position].put(name, blob)
                with self._lock:
                    self.held[position][name] = len(blob)
            with self._lock:
                self.stats.new_chunks += 1
                self.stats.new_bytes += len(blob)
        finally:
            self._slots.release()

    def _reap(self) -> None:
        """Raise the first failure of a finished upload; forget the finished ones."""
        running = []
        for future in self._futures:
            if future.done():
                future.result()
            else:
                running.append(future)
        self._futures = running

    def _wait(self) -> None:
        for future in self._futures:
            future.result()
        self._futures = []
