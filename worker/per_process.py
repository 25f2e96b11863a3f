"""One object per OS process: made on first use, made again in a forked child, never shared.

The engine (`worker.db`) and the view buffer's Redis client (`worker.producer.viewbuffer`) are
both of this kind: a prefork child must not touch the sockets of its parent's pool.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Generic, TypeVar

T = TypeVar("T")


class PerProcess(Generic[T]):
    """Holds the calling process's `T`, made by `make()` when first asked for in that process.

    `abandon(value)` is called in a forked child on the value it inherited (to drop it without
    closing the parent's sockets); the child makes its own on first use.
    """

    def __init__(self, make: Callable[[], T], abandon: Callable[[T], None] | None = None) -> None:
        self._make = make
        self._abandon = abandon
        self._lock = threading.Lock()
        self._value: T | None = None
        self._pid: int | None = None
        os.register_at_fork(after_in_child=self._forget_in_child)

    def get(self) -> T:
        """This process's value, made now if it has none yet."""
        pid = os.getpid()
        value = self._value
        if value is not None and self._pid == pid:
            return value
        with self._lock:
            if self._value is None or self._pid != pid:
                self._forget_inherited()
                self._value, self._pid = self._make(), pid
            return self._value

    def current(self) -> T | None:
        """This process's value if it made one, without making it."""
        return self._value if self._pid == os.getpid() else None

    def clear(self, close: Callable[[T], None]) -> None:
        """`close` this process's value, if any; the next `get` makes a new one."""
        with self._lock:
            if self._value is not None and self._pid == os.getpid():
                close(self._value)
            self._value, self._pid = None, None

    @contextmanager
    def replaced(self, value: T) -> Iterator[None]:
        """Use `value` as this process's value for a while (tests), then the previous one."""
        with self._lock:
            previous = self._value, self._pid
            self._value, self._pid = value, os.getpid()
        try:
            yield
        finally:
            with self._lock:
                self._value, self._pid = previous

    def _forget_inherited(self) -> None:
        if self._value is not None and self._abandon is not None:
            self._abandon(self._value)
        self._value, self._pid = None, None

    def _forget_in_child(self) -> None:
        self._forget_inherited()
        self._lock = threading.Lock()
