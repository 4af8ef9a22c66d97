"""``obsflow index``: (re)build or check the GBTIDL ``.index`` beside SDFITS files."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import click

from obsflow.cli._options import emit_json, json_option
from obsflow.errors import EXIT_FINDINGS, EXIT_OK
from obsflow.online.reindex import hold_projects, plan_index, run_index

__all__ = ["command"]

EPILOG = """\b
Examples:
  obsflow index AGBT22A_325_15.raw.vegas.A.fits          write AGBT22A_325_15.raw.vegas.A.index
  obsflow index --check out/*/*.raw.vegas/*.fits         exit 1 if an index is stale
  obsflow index out/AGBT26A_001_01/AGBT26A_001_01.raw.vegas/   the combined index of all banks
"""


@click.command(name="index", epilog=EPILOG)
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--check", is_flag=True, help="Only compare each existing .index with a fresh build; exit 1 if any differs.")
@click.option("--locks", "locks_dir", type=click.Path(path_type=Path, file_okay=False),
              help="The filler's lock-file folder [<root>/locks of each output tree, where there is one].")
@click.option("--lock-timeout", type=click.FloatRange(min=0), default=60.0, show_default=True,
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
            hold_projects(stack, paths, locks_dir, lock_timeout)
        jobs = [plan_index(path) for path in paths]  # raises InputError before any write
        results = [run_index(job, check) for job in jobs]
    if as_json:
        emit_json({"check": check, "results": results})
    else:
        for result in results:
            click.echo(f"{result['status']:8} {result['index']} ({result['rows']} rows)")
    failed = check and any(result["status"] != "ok" for result in results)
    return EXIT_FINDINGS if failed else EXIT_OK
