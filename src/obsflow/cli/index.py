"""``obsflow index``: (re)build or check the GBTIDL ``.index`` beside SDFITS files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import click

from obsflow.cli._options import emit_json, json_option
from obsflow.errors import EXIT_FINDINGS, EXIT_OK, InputError
from obsflow.sdfits.index import write_index_text
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


def _rows_section(text: str) -> str:
    """Everything from ``[rows]`` on: what --check compares (header dates always differ)."""
    return text[text.find("\n[rows]\n") :]


def _plan(path: Path) -> _Job:
    if path.is_dir():
        banks = sorted(p for p in path.glob("*.fits") if p.is_file())
        if not banks:
            raise InputError("folder holds no .fits files", path)
        target = combined_index_path(path)
        return _Job(path, target, build_combined_index(banks, existing_index=target))
    return _Job(path, index_path_for(path), build_index_for_fits(path))


def _compare(job: _Job) -> str:
    if not job.index.is_file():
        return "missing"
    try:
        current = job.index.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError):
        return "differs"
    return "ok" if _rows_section(current) == _rows_section(job.text) else "differs"


@click.command(name="index", epilog=EPILOG)
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--check", is_flag=True, help="Only compare each existing .index with a fresh build; exit 1 if any differs.")
@json_option
def command(paths: tuple[Path, ...], check: bool, as_json: bool) -> int:
    """(Re)build the GBTIDL index of each SDFITS FITS file (ours or GBT's), or check it.

    For a FITS file X.fits the index is X.index beside it.  For a folder like
    <PROJ>.raw.vegas/ it is the combined <PROJ>.raw.vegas.index over every bank file,
    the file GBTIDL opens online.  Every input is read before anything is written, so
    bad input (not FITS, truncated, not SDFITS) leaves every index untouched.
    """
    jobs = [_plan(path) for path in paths]  # raises InputError before any write
    results = []
    for job in jobs:
        n_rows = _rows_section(job.text).count("\n") - 3  # minus the [rows] and column-name lines
        if check:
            status = _compare(job)
        else:
            write_index_text(job.index, job.text)
            status = "written"
        results.append({"source": str(job.source), "index": str(job.index), "rows": n_rows, "status": status})
    if as_json:
        emit_json({"check": check, "results": results})
    else:
        for result in results:
            click.echo(f"{result['status']:8} {result['index']} ({result['rows']} rows)")
    failed = check and any(result["status"] != "ok" for result in results)
    return EXIT_FINDINGS if failed else EXIT_OK
