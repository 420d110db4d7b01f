"""A bounded record of a command's output: the last `limit` bytes, and how much came before."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

from service.jobs import OutputSnapshot

#: called with (offset of the chunk in the whole output, chunk) as output arrives
ChunkListener = Callable[[int, bytes], None]


class OutputTail:
    """Keeps the end of an output stream within a byte limit; thread-safe.

    Appending never copies what is kept (chunks sit in a deque), so a command that prints
    gigabytes costs a bounded amount of memory and time per byte.
    """

    def __init__(
        self,
        limit: int,
        initial: OutputSnapshot | None = None,
        listener: ChunkListener | None = None,
    ) -> None:
        self._limit = limit
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._offset = 0  # bytes dropped from the front, over the whole job
        self._lock = threading.Lock()
        self._listener = listener
        self.version = 0  # bumped on every append: lets callers skip unchanged flushes
        if initial is not None:
            self._offset = initial.offset
            self._append(initial.data)

    def _append(self, chunk: bytes) -> None:
        if len(chunk) >= self._limit:
            self._offset += self._size + len(chunk) - self._limit
            self._chunks.clear()
            self._chunks.append(chunk[-self._limit :])
            self._size = self._limit
            return
        self._chunks.append(chunk)
        self._size += len(chunk)
        while self._size > self._limit:
            head = self._chunks[0]
            excess = self._size - self._limit
            if len(head) <= excess:
                self._chunks.popleft()
                self._size -= len(head)
                self._offset += len(head)
            else:
                self._chunks[0] = head[excess:]
                self._size -= excess
                self._offset += excess

    def write(self, chunk: bytes) -> None:
        if not chunk:
            return
        with self._lock:
            start = self._offset + self._size
            self._append(chunk)
            self.version += 1
        if self._listener is not None:
            self._listener(start, chunk)

    @property
    def total(self) -> int:
        with self._lock:
            return self._offset + self._size

    def snapshot(self) -> OutputSnapshot:
        with self._lock:
            data = b"".join(self._chunks)
            if len(self._chunks) > 1:
                self._chunks.clear()
                self._chunks.append(data)
            return OutputSnapshot(data=data, offset=self._offset)
