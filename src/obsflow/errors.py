"""The one exception tree of obsflow, and its exit codes.

    ObsflowError                 anything obsflow reports as a one-line user error
    ├── UsageError               the command line itself is wrong            (exit 2)
    ├── ConfigError              the TOML config is wrong                    (exit 2)
    ├── InputError               bad input data: FITS, raw scan, a path      (exit 2)
    │   └── PathEscapeError      a name that tries to leave its root         (exit 2)
    ├── LockError                a lock could not be taken in time           (exit 2)
    ├── TransportError           a copy or listing failed                    (exit 2)
    │   ├── HostUnreachable      ssh could not reach a host                  (exit 2)
    │   └── RemoteCommandFailed  a remote command ran and failed             (exit 2)
    ├── OutputError              an output file or folder cannot be written  (exit 2)
    └── IntegrityError           data on disk disagree with what they claim  (exit 2)

Per-file findings (a missing file, a conflict) are *not* exceptions: they go into
reports, and the command exits 1 when a report has problems.  Only ``cli.main``
catches ``ObsflowError``; anything else escaping is a bug and shows a traceback.
"""

from __future__ import annotations

from pathlib import Path

#: exit codes, in one table
EXIT_OK = 0
EXIT_FINDINGS = 1  # finished, but something was left undone or differs
EXIT_CANNOT_RUN = 2  # could not run, or could not check something
EXIT_INTERRUPTED = 130


class ObsflowError(Exception):
    """An error the user can act on, rendered as one line: what, then where."""

    exit_code = EXIT_CANNOT_RUN

    def __init__(self, what: str, where: str | Path | None = None) -> None:
        self.what = what
        self.where = str(where) if where is not None else None
        super().__init__(self.one_line())

    def one_line(self) -> str:
        """The message as the CLI prints it after ``obsflow: error: ``."""
        return f"{self.what} ({self.where})" if self.where else self.what


class UsageError(ObsflowError):
    """The command line asks for something that cannot be done."""


class ConfigError(ObsflowError):
    """The configuration file is missing, unreadable or invalid."""


class InputError(ObsflowError):
    """Input data (a FITS file, a raw scan, a directory) is malformed or missing."""


class PathEscapeError(InputError):
    """A file name would leave the root it belongs to (``..``, absolute, symlink)."""


class LockError(ObsflowError):
    """A lock is held by someone else and did not come free in time.

    ``holder``: who holds it, as the lock file says (for a caller that states its own wait).
    """

    def __init__(self, what: str, where: str | Path | None = None, holder: str | None = None) -> None:
        super().__init__(what, where)
        self.holder = holder


class TransportError(ObsflowError):
    """Listing or copying files failed."""


class HostUnreachable(TransportError):
    """A remote host could not be reached over ssh."""


class RemoteCommandFailed(TransportError):
    """A command on a remote host ran and failed; ``output``: what it printed before (its stdout)."""

    def __init__(self, what: str, where: str | Path | None = None, output: bytes = b"") -> None:
        super().__init__(what, where)
        self.output = output


class OutputError(ObsflowError):
    """An output file or folder cannot be written (permissions, full disk)."""


class CatalogError(OutputError):
    """The sync's catalog cannot be read or written: damaged, or a full, read-only or missing disk."""


class IntegrityError(ObsflowError):
    """Files on disk disagree with each other or with what they claim to hold."""
