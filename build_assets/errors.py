"""Errors a user can act on: printed as one line, never as a traceback."""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input or environment (exit code 2, one line per problem)."""

    exit_code = 2

    def __init__(self, message: str, *, lines: list[str] | None = None) -> None:
        super().__init__(message)
        self.lines = lines or [message]

    def __str__(self) -> str:
        return "\n".join(self.lines)


class ManifestError(UserError):
    """images.yaml is missing, malformed or inconsistent."""


class GitError(UserError):
    """The folder is not a git repository, or a ref does not exist."""


class BuildError(Exception):
    """A build finished unsuccessfully; carries what a person needs to fix it."""

    def __init__(
        self,
        image: str,
        message: str,
        *,
        status: str = "FAILED",
        phase: str | None = None,
        log_tail: str = "",
        log_url: str | None = None,
        build_id: str | None = None,
    ) -> None:
        super().__init__(f"{image}: {message}")
        self.image = image
        self.status = status
        self.phase = phase
        self.log_tail = log_tail
        self.log_url = log_url
        self.build_id = build_id
