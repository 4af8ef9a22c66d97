"""(Re)building or checking the GBTIDL index of SDFITS files: ``obsflow index``'s job.

Plan first (every input read and every index built in memory: bad input fails before any
write), then compare or write.  In a filler's output tree the project's lock is held while
rebuilding: a fill appending meanwhile would lose its rows to the index renamed into place.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from obsflow.errors import InputError, IntegrityError
from obsflow.online.layout import OutputLayout, output_project
from obsflow.sdfits.index import has_same_rows, row_lines, write_index_text
from obsflow.sdfits.index_fits import build_combined_index, build_index_for_fits, combined_index_path, index_path_for

__all__ = ["IndexJob", "hold_projects", "plan_index", "run_index"]


@dataclass(frozen=True)
class IndexJob:
    """One index to build: from what, where to, its text, and the FITS sizes it was built from."""

    source: Path  # a FITS file, or a folder of bank files
    index: Path
    text: str
    sizes: dict[Path, int]  # of the FITS files read: re-checked before the index is replaced


def _sizes(paths: list[Path]) -> dict[Path, int]:
    return {path: path.stat().st_size for path in paths}


def plan_index(path: Path) -> IndexJob:
    """The index of a FITS file (``X.index``), or of a folder of bank files (the combined index,
    keeping the order of the one it replaces); raises InputError for anything not SDFITS."""
    if path.is_dir():
        banks = sorted(p for p in path.glob("*.fits") if p.is_file())
        if not banks:
            raise InputError("folder holds no .fits files", path)
        target = combined_index_path(path)
        sizes = _sizes(banks)
        return IndexJob(path, target, build_combined_index(banks, existing_index=target), sizes)
    sizes = _sizes([path]) if path.is_file() else {}
    return IndexJob(path, index_path_for(path), build_index_for_fits(path), sizes)


def _compare(job: IndexJob) -> str:
    if not job.index.is_file():
        return "missing"
    try:
        current = job.index.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError):
        return "differs"
    return "ok" if has_same_rows(current, job.text) else "differs"


def _write(job: IndexJob) -> None:
    """Replace the index, unless a FITS file grew while it was built (its new rows would be missing)."""
    if any(path.stat().st_size != size for path, size in job.sizes.items()):
        raise IntegrityError("a FITS file changed while its index was built; run 'obsflow index' again", job.source)
    write_index_text(job.index, job.text)


def hold_projects(stack: ExitStack, paths: tuple[Path, ...], locks_dir: Path | None, timeout_s: float) -> None:
    """Hold the project lock of every path in a filler's tree (a fill appending meanwhile would
    lose its rows to the index renamed into place); in name order, so two of us cannot deadlock."""
    projects = sorted({found for found in map(output_project, paths) if found is not None})
    for root, project in projects:
        layout = OutputLayout(root, locks_root=locks_dir)
        if locks_dir is None and not layout.locks_dir.is_dir():
            continue  # no filler keeps its locks there (GBT's own tree, a copy): nothing to wait for or create
        stack.enter_context(layout.project_held(project, timeout_s, "rebuild the GBTIDL index"))


def run_index(job: IndexJob, check: bool) -> dict[str, object]:
    """Compare (``check``) or write one planned index; what was done, as a JSON-ready dict."""
    n_rows = len(row_lines(job.text))
    if check:
        status = _compare(job)
    else:
        _write(job)
        status = "written"
    return {"source": str(job.source), "index": str(job.index), "rows": n_rows, "status": status}
