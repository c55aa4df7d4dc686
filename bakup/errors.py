"""The error types bakup raises for failures a user can act on.

Every error carries a one-line message that says what failed and what to do; the CLI prints
it without a traceback. ``stage`` names the step that failed so that metrics and alerts can
group failures (connect, dump, compress, store, manifest, prune, restore, verify, config).
"""

from __future__ import annotations


class BakupError(Exception):
    """A failure with a message meant for the operator.

    Given the message, the stage that failed and whether trying again later may help
    (``transient``: a refused connection, a storage outage) or cannot (a wrong password, a
    missing database); ``exit_code`` is what the CLI exits with.
    """

    exit_code = 1
    default_transient = False

    def __init__(
        self, message: str, *, stage: str = "backup", transient: bool | None = None
    ) -> None:
        super().__init__(message)
        self.stage = stage
        self.transient = self.default_transient if transient is None else transient

    @property
    def message(self) -> str:
        """The one-line message."""
        return str(self.args[0])


class ConfigError(BakupError):
    """Invalid configuration: every problem found, each naming its variable."""

    exit_code = 2

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems), stage="config")


class DumpError(BakupError):
    """pg_dump could not be started, or failed, or its output was not a complete archive."""


class StorageError(BakupError):
    """The backup could not be written to, read from or deleted in its storage."""

    default_transient = True


class ChecksumMismatch(BakupError):
    """A stored backup's bytes no longer match the sha256 in its manifest."""


class BackupNotFound(BakupError):
    """No complete backup has the name the user gave."""

    exit_code = 2


class RestoreError(BakupError):
    """A restore was refused (target not empty) or pg_restore failed."""


class Terminated(BakupError):
    """The process was asked to stop (SIGTERM) while it worked: what it had begun is discarded
    and the run is recorded as failed, so a stopped cron run never passes silently.

    ``requested`` stays set once the signal came: code that must not complete a run after it
    (``lifecycle.complete``) checks it, so an exception swallowed by a broad handler on the
    way (a best-effort estimate, a progress line) cannot let a terminated run pass.
    """

    exit_code = 143
    requested = False

    @classmethod
    def check(cls) -> None:
        """Raise Terminated if SIGTERM was received."""
        if cls.requested:
            raise cls()

    def __init__(self) -> None:
        super().__init__(
            "terminated (SIGTERM) before the run finished; nothing partial was kept",
            stage="interrupted",
            transient=True,
        )
