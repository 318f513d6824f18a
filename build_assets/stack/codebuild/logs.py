"""A build's log: a file next to the build, streamed to CloudWatch Logs (moto) as CodeBuild does.

Lines are batched and sent by one thread per build (`put_log_events`, at most once a second and
at `close`), so a slow or stopped moto never slows the build's commands down; what could not be
sent stays in the local file (`<build dir>/build.log`).
"""

from __future__ import annotations

import contextlib
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

FLUSH_S = 1.0
BATCH = 1000  # well under put_log_events' 10,000 events / 1 MiB per call


def container_line(message: str) -> str:
    """A line in the shape of CodeBuild's own log lines (`[Container] <time> ...`)."""
    stamp = datetime.now(UTC).strftime("%Y/%m/%d %H:%M:%S.%f")
    return f"[Container] {stamp} {message}"


class BuildLog:
    """Append lines; they go to `path` at once and to CloudWatch in batches."""

    def __init__(self, path: Path, logs_client: Any, group: str, stream: str) -> None:
        self.path = path
        self.group, self.stream = group, stream
        self._client = logs_client
        self._pending: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._file = open(path, "a", encoding="utf-8", errors="replace")  # noqa: SIM115
        self._ready = self._create()
        self._thread = threading.Thread(target=self._loop, name=f"logs {stream}", daemon=True)
        self._thread.start()

    def _create(self) -> bool:
        try:
            with contextlib.suppress(self._client.exceptions.ResourceAlreadyExistsException):
                self._client.create_log_group(logGroupName=self.group)
            with contextlib.suppress(self._client.exceptions.ResourceAlreadyExistsException):
                self._client.create_log_stream(logGroupName=self.group, logStreamName=self.stream)
            return True
        except (ClientError, BotoCoreError) as exc:
            self._write_local(container_line(f"cannot write CloudWatch Logs: {exc}"))
            return False

    def _write_local(self, line: str) -> None:
        self._file.write(line + "\n")
        self._file.flush()

    def line(self, text: str) -> None:
        """One line of output (without its newline)."""
        with self._lock:
            if self._closed:
                return
            self._write_local(text)
            self._pending.append({"timestamp": int(time.time() * 1000), "message": text + "\n"})
            if len(self._pending) >= BATCH:
                self._wake.set()

    def container(self, message: str) -> None:
        self.line(container_line(message))

    def _send(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, []
        if not batch or not self._ready:
            return
        for i in range(0, len(batch), BATCH):
            with contextlib.suppress(ClientError, BotoCoreError):
                self._client.put_log_events(
                    logGroupName=self.group,
                    logStreamName=self.stream,
                    logEvents=batch[i : i + BATCH],
                )

    def _loop(self) -> None:
        while not self._closed:
            self._wake.wait(FLUSH_S)
            self._wake.clear()
            self._send()

    def close(self) -> None:
        """Send what is left and stop the sender."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._wake.set()
        self._thread.join(timeout=10)
        self._send()
        self._file.close()
