"""What a sync did, per hop and instrument: the values the CLI renders and ``--json`` prints.

Per-file findings (in flight, locked, conflicts, refused, errors) are values, not
exceptions (as in rclone's check): each file is counted once, in one list.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from obsflow.errors import EXIT_CANNOT_RUN, EXIT_FINDINGS, EXIT_OK
from obsflow.transfer.plan import Refusal

__all__ = ["HopOutcome", "Progress", "SyncReport"]


class Progress(Protocol):
    """Receives progress as files land (the CLI draws bars or prints lines)."""

    def start(self, label: str, files: int, size_bytes: int) -> None: ...

    def advance(self, size_bytes: int) -> None: ...

    def stop(self) -> None: ...


@dataclass
class HopOutcome:
    """The result of one instrument over one hop."""

    hop: str
    instrument: str
    source: str
    dest: str
    dry_run: bool = False
    copied: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)  # of ``copied``: grown files that replaced our older copy
    pruned: list[str] = field(default_factory=list)  # superseded versions removed (keep_superseded_days)
    copied_bytes: int = 0
    sent_bytes: int = 0  # what went over the wire: less than copied_bytes when rsync resumed a partial file
    present: int = 0
    in_flight: list[str] = field(default_factory=list)
    locked: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    failure: str | None = None  # could not run at all (host unreachable, source missing)
    seconds: float = 0.0

    @property
    def undone(self) -> int:
        """Files left for a later run or for a person."""
        return len(self.in_flight) + len(self.locked) + len(self.conflicts) + len(self.refused) + len(self.errors)

    @property
    def status(self) -> str:
        """``ok``, ``incomplete`` (something left undone) or ``failed`` (could not run)."""
        if self.failure:
            return "failed"
        return "incomplete" if self.undone else "ok"

    def counts(self) -> dict[str, int]:
        return {
            "copied": len(self.copied), "present": self.present, "in_flight": len(self.in_flight),
            "locked": len(self.locked), "conflicts": len(self.conflicts), "refused": len(self.refused),
            "errors": len(self.errors), "bytes": self.copied_bytes,
        }  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        return {
            "hop": self.hop, "instrument": self.instrument, "source": self.source, "dest": self.dest,
            "status": self.status, "dry_run": self.dry_run, **self.counts(), "sent_bytes": self.sent_bytes,
            "seconds": round(self.seconds, 3),
            "copied_files": self.copied, "updated_files": self.updated,
            "pruned_superseded": self.pruned, "in_flight_files": self.in_flight, "locked_files": self.locked,
            "conflict_files": self.conflicts,
            "refused_files": [{"path": r.path, "reason": r.reason} for r in self.refused],
            "error_messages": self.errors, "failure": self.failure,
        }  # fmt: skip


@dataclass
class SyncReport:
    """Every hop outcome of one ``obsflow sync``, plus warnings about missed runs."""

    outcomes: list[HopOutcome] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    dates: tuple[str, str] = ("", "")

    @property
    def exit_code(self) -> int:
        """2 if something could not run, 1 if something was left undone, else 0."""
        if any(o.failure for o in self.outcomes):
            return EXIT_CANNOT_RUN
        if any(o.undone for o in self.outcomes):
            return EXIT_FINDINGS
        return EXIT_OK

    def to_json(self) -> dict[str, Any]:
        return {
            "window": {"first": self.dates[0], "last": self.dates[1]},
            "exit_code": self.exit_code,
            "warnings": self.warnings,
            "hops": [o.to_json() for o in self.outcomes],
        }
