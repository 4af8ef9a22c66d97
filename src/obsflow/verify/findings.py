"""The result of one verification: a :class:`Report` of per-hop, per-instrument findings.

One value, rendered three ways by ``verify.report`` and mailed by ``verify.mail``.  Per-file
findings are data, never exceptions.  Invariant: a folder that could not be checked carries
its ``error`` and no per-file findings, so it can never read as "None" (all well).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from obsflow.errors import EXIT_CANNOT_RUN, EXIT_FINDINGS, EXIT_OK
from obsflow.verify.compare import HashDiff, Locked, Refused, SizeDiff
from obsflow.verify.period import Period

__all__ = ["COUNT_NAMES", "FolderResult", "Report"]

#: the counts, in the order the subject line and summaries give them
COUNT_NAMES = ("missing", "size_differs", "hash_differs", "not_checked")


@dataclass(frozen=True)
class FolderResult:
    """Findings for one instrument on one hop (``source`` -> ``dest``).

    ``error`` is set when the folder could not be checked at all (a host unreachable, a
    root folder missing); ``hash_error`` when contents could not be compared; ``unhashed``
    lists single files whose content could not be compared (vanished before hashing).
    ``hash_checked`` is False when contents were not compared (no ``--checksum``).
    """

    hop: str
    instrument: str
    source: str  # endpoint name shown in headings: the instrument's name on the first hop
    dest: str
    source_location: str
    dest_location: str
    missing: tuple[str, ...] = ()
    size_differs: tuple[SizeDiff, ...] = ()
    hash_differs: tuple[HashDiff, ...] = ()
    unhashed: tuple[str, ...] = ()
    in_flight: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()
    refused: tuple[Refused, ...] = ()  # leads outside the root: the sync refuses it (a finding)
    locked: tuple[Locked, ...] = ()  # the filler holds its project: not yet copied (a finding if it is gone)
    grown: tuple[str, ...] = ()  # grew on A since its copy (grows = true): the next sync replaces it
    matched: int = 0
    hash_checked: bool = False
    error: str | None = None  # nothing could be compared
    hash_error: str | None = None  # sizes were compared, contents could not be

    @property
    def is_checked(self) -> bool:
        return self.error is None

    @property
    def not_checked(self) -> int:
        """1 for a folder that could not be (fully) checked, else the files that could not be hashed."""
        if self.error is not None or self.hash_error is not None:
            return 1
        return len(self.unhashed)

    @property
    def has_differences(self) -> bool:
        return bool(self.missing or self.size_differs or self.hash_differs or self.refused or self.locked_gone)

    @property
    def locked_gone(self) -> tuple[Locked, ...]:
        """Files held back by a lock whose filler died: they stay uncopied until it restarts."""
        return tuple(item for item in self.locked if item.gone)

    @property
    def status(self) -> str:
        """``not checked``, ``differences`` or ``ok``."""
        if self.not_checked:
            return "not checked"
        return "differences" if self.has_differences else "ok"


@dataclass(frozen=True)
class Report:
    """Everything one ``obsflow verify`` run found."""

    period: Period
    started: float
    ended: float
    settle_s: float  # the settle time; the longest when the instruments' differ
    hash_checked: bool
    folders: tuple[FolderResult, ...] = field(default_factory=tuple)
    settle_by_instrument: tuple[tuple[str, float], ...] = ()  # (instrument, seconds) of those checked

    @property
    def counts(self) -> dict[str, int]:
        """Totals over all folders (see COUNT_NAMES), plus ``matched``, ``in_flight``, ``refused`` and
        ``locked`` (``locked_gone``: of those, held by a filler that is gone)."""
        totals = {
            "missing": sum(len(f.missing) for f in self.folders),
            "size_differs": sum(len(f.size_differs) for f in self.folders),
            "hash_differs": sum(len(f.hash_differs) for f in self.folders),
            "not_checked": sum(f.not_checked for f in self.folders),
            "matched": sum(f.matched for f in self.folders),
            "in_flight": sum(len(f.in_flight) for f in self.folders),
            "refused": sum(len(f.refused) for f in self.folders),
            "locked": sum(len(f.locked) for f in self.folders),
            "locked_gone": sum(len(f.locked_gone) for f in self.folders),
            "grown": sum(len(f.grown) for f in self.folders),
        }
        return totals

    @property
    def has_problems(self) -> bool:
        return self.exit_code != EXIT_OK

    @property
    def exit_code(self) -> int:
        """0 everything present and equal, 1 differences found, 2 something could not be checked."""
        counts = self.counts
        if counts["not_checked"]:
            return EXIT_CANNOT_RUN
        if any(counts[name] for name in ("missing", "size_differs", "hash_differs", "refused", "locked_gone")):
            return EXIT_FINDINGS
        return EXIT_OK

    @property
    def status(self) -> str:
        return {EXIT_OK: "ok", EXIT_FINDINGS: "differences"}.get(self.exit_code, "not checked")

    @property
    def subject(self) -> str:
        """One line that says at a glance whether all is well (mail subject, report title)."""
        counts = self.counts
        if not self.has_problems:
            what = "content" if self.hash_checked else "size"
            hops, instruments = len({f.hop for f in self.folders}), len({f.instrument for f in self.folders})
            return (
                f"OK: {counts['matched']} files present and equal ({what}), "
                f"{hops} hops x {instruments} instruments, {self.period}"
            )
        parts = [
            f"{counts['missing']} missing",
            f"{counts['size_differs']} size differs",
        ]
        if self.hash_checked:
            parts.append(f"{counts['hash_differs']} checksum differs")
        parts.append(f"{counts['not_checked']} not checked")
        if counts["refused"]:
            parts.append(f"{counts['refused']} refused")
        if counts["locked_gone"]:
            parts.append(f"{counts['locked_gone']} locked by a filler that is gone")
        return f"FAILED: {', '.join(parts)}, {self.period}"
