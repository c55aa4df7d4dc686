"""Reading a stream ahead in a thread, so decompressing overlaps with writing.

A local copy for ``pg_restore --jobs`` reads, hashes, decrypts and decompresses the stored
archive, then parses and writes it. Done in turn, the two halves add up; the decompressors
(zstandard, zlib, age) release the GIL while they work, so a reader thread a few chunks ahead
makes the copy take about as long as the slower half.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator
from typing import BinaryIO

# Chunks held between the reader and the consumer: enough to ride out an uneven disk, little
# memory (DEPTH x the chunk size).
DEPTH = 8


class _End:
    """Put on the queue once the stream is exhausted, or with the error that stopped it."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


def read_ahead(stream: BinaryIO, size: int, depth: int = DEPTH) -> Generator[bytes, None, None]:
    """Yield ``stream``'s contents in chunks of at most ``size`` bytes, read by a thread that
    stays up to ``depth`` chunks ahead.

    The reading thread is the only one to touch ``stream`` until the generator is exhausted or
    closed; closing it early (the consumer failed) stops the thread before returning, once a
    read in progress has returned. An
    exception raised by ``stream.read`` is raised here, at the chunk where it happened.
    """
    chunks: queue.Queue[bytes | _End] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: bytes | _End) -> bool:
        while not stop.is_set():
            try:
                chunks.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            while chunk := stream.read(size):
                if not put(chunk):
                    return
            put(_End())
        except BaseException as error:  # handed to the consumer, which raises it
            put(_End(error))

    reader = threading.Thread(target=read, name="bakup-read-ahead", daemon=True)
    reader.start()
    try:
        while True:
            item = chunks.get()
            if isinstance(item, _End):
                if item.error is not None:
                    raise item.error
                return
            yield item
    finally:
        stop.set()
        reader.join()
