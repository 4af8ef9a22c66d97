"""``obsflow index``: (re)build or check the GBTIDL ``.index`` beside SDFITS files."""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import click

from obsflow.cli._options import emit_json, json_option
from obsflow.errors import EXIT_FINDINGS, EXIT_OK, InputError, IntegrityError
from obsflow.online.layout import OutputLayout, output_project
from obsflow.sdfits.index import has_same_rows, row_lines, write_index_text
from obsflow.sdfits.index_fits import build_combined_index, build_index_for_fits, combined_index_path, index_path_for

__all__ = ["command"]

EPILOG = """\b
Examples:
  obsflow index AGBT22A_325_15.raw.vegas.A.fits          write AGBT22A_325_15.raw.vegas.A.index
  obsflow index --check out/*/*.raw.vegas/*.fits         exit 1 if an index is stale
  obsflow index out/AGBT26A_001_01/AGBT26A_001_01.raw.vegas/   the combined index of all banks
"""


@dataclass(frozen=True)
class _Job:
    source: Path  # a FITS file, or a folder of bank files
    index: Path
    text: str
    sizes: dict[Path, int]  # of the FITS files read: re-checked before the index is replaced


def _sizes(paths: list[Path]) -> dict[Path, int]:
    return {path: path.stat().st_size for path in paths}


def _plan(path: Path) -> _Job:
    if path.is_dir():
        banks = sorted(p for p in path.glob("*.fits") if p.is_file())
        if not banks:
            raise InputError("folder holds no .fits files", path)
        target = combined_index_path(path)
        sizes = _sizes(banks)
        return _Job(path, target, build_combined_index(banks, existing_index=target), sizes)
    sizes = _sizes([path]) if path.is_file() else {}
    return _Job(path, index_path_for(path), build_index_for_fits(path), sizes)


def _compare(job: _Job) -> str:
    if not job.index.is_file():
        return "missing"
    try:
        current = job.index.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError):
        return "differs"
    return "ok" if has_same_rows(current, job.text) else "differs"


def _write(job: _Job) -> None:
    """Replace the index, unless a FITS file grew while it was built (its new rows would be missing)."""
    if any(path.stat().st_size != size for path, size in job.sizes.items()):
        raise IntegrityError("a FITS file changed while its index was built; run 'obsflow index' again", job.source)
    write_index_text(job.index, job.text)


def _hold_projects(stack: ExitStack, paths: tuple[Path, ...], locks_dir: Path | None, timeout_s: float) -> None:
    """Hold the project lock of every path in a filler's tree (a fill appending meanwhile would
    lose its rows to the index renamed into place); in name order, so two of us cannot deadlock."""
    projects = sorted({found for found in map(output_project, paths) if found is not None})
    for root, project in projects:
        layout = OutputLayout(root, locks_root=locks_dir)
        if locks_dir is None and not layout.locks_dir.is_dir():
            continue  # no filler keeps its locks there (GBT's own tree, a copy): nothing to wait for or create
        stack.enter_context(layout.project_held(project, timeout_s, "rebuild the GBTIDL index"))


@click.command(name="index", epilog=EPILOG)
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--check", is_flag=True, help="Only compare each existing .index with a fresh build; exit 1 if any differs.")
@click.option("--locks", "locks_dir", type=click.Path(path_type=Path, file_okay=False),
              help="The filler's lock-file folder [<root>/locks of each output tree, where there is one].")
@click.option("--lock-timeout", type=float, default=60.0, show_default=True,
              help="Seconds to wait for a fill of the project to finish.")
@json_option
def command(paths: tuple[Path, ...], check: bool, locks_dir: Path | None, lock_timeout: float, as_json: bool) -> int:
    """(Re)build the GBTIDL index of each SDFITS FITS file (ours or GBT's), or check it.

    For a FITS file X.fits the index is X.index beside it.  For a folder like
    <PROJ>.raw.vegas/ it is the combined <PROJ>.raw.vegas.index over every bank file,
    the file GBTIDL opens online.  Every input is read before anything is written, so
    bad input (not FITS, truncated, not SDFITS) leaves every index untouched.  In a filler's
    output tree the project's lock is held while rebuilding, and a rebuilt combined index keeps
    the order of the one it replaces (the fill order GBTIDL may be reading).

    --check builds as the GBT filler does: an index GBTIDL wrote itself (a keep file) is
    reported as differing though it is not stale, as GBTIDL puts CENTFREQ one channel from
    the filler's value and writes DATEOBS as the date alone.
    """
    with ExitStack() as stack:
        if not check:
            _hold_projects(stack, paths, locks_dir, lock_timeout)
        jobs = [_plan(path) for path in paths]  # raises InputError before any write
        results = [_run(job, check) for job in jobs]
    if as_json:
        emit_json({"check": check, "results": results})
    else:
        for result in results:
            click.echo(f"{result['status']:8} {result['index']} ({result['rows']} rows)")
    failed = check and any(result["status"] != "ok" for result in results)
    return EXIT_FINDINGS if failed else EXIT_OK


def _run(job: _Job, check: bool) -> dict[str, object]:
    n_rows = len(row_lines(job.text))
    if check:
        status = _compare(job)
    else:
        _write(job)
        status = "written"
    return {"source": str(job.source), "index": str(job.index), "rows": n_rows, "status": status}
