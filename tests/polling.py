"""Polling the outside world in tests: a process, a log line, a service's state.

Not synchronisation between our own threads (those use events); the things polled here are
other processes that cannot signal a test."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def until(cond: Callable[[], T], timeout: float, what: str, interval: float = 0.1) -> T:
    """Call `cond` until it returns something true, and return that; fail the test naming
    `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)
