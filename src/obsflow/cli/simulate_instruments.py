"""``obsflow simulate-instruments``: write SAAO-style instrument data (CCD FITS in dated folders)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import click

from obsflow.cli._options import emit_json, json_option
from obsflow.simulate.instrument import INSTRUMENTS, simulate_instruments
from obsflow.transfer.plan import parse_date

__all__ = ["command"]

EPILOG = """\b
Example:
  obsflow simulate-instruments /tmp/inst --instruments sha,shd,spupnic --nights 40 --frames 5
  -> /tmp/inst/sha/2026/1123/SHA_20261123.0001.fits ...
"""


@click.command("simulate-instruments", epilog=EPILOG)
@click.argument("root", type=click.Path(path_type=Path, file_okay=False))
@click.option("--instruments", default="sha,shd,spupnic", show_default=True,
              help=f"Comma-separated, from: {', '.join(INSTRUMENTS)}.")  # fmt: skip
@click.option("--nights", type=click.IntRange(min=1), default=40, show_default=True)
@click.option("--end-date", metavar="DATE", help="Last night, YYYYMMDD or YYYY-MM-DD (default: today).")
@click.option("--frames", type=click.IntRange(min=1), default=3, show_default=True, help="Frames per night.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--growing", is_flag=True, help="Leave the last frame half-written, as if still exposing.")
@json_option
def command(root: Path, instruments: str, nights: int, end_date: str | None, frames: int, seed: int, growing: bool,
            as_json: bool) -> int:  # fmt: skip
    """Write simulated SHOC / SpUpNIC frames into ROOT/<inst>/YYYY/MMDD/."""
    names = [name.strip() for name in instruments.split(",") if name.strip()]
    unknown = [name for name in names if name not in INSTRUMENTS]
    if unknown:
        raise click.BadParameter(f"unknown instrument {unknown[0]!r} (known: {', '.join(INSTRUMENTS)})")
    end = parse_date(end_date) if end_date else date.today()
    sim = simulate_instruments(root, names, nights, end, frames=frames, seed=seed, growing=growing)
    growing_path = str(sim.growing.path) if sim.growing else None
    if as_json:
        emit_json({"root": str(root), "files": len(sim.files), "growing": growing_path})
    else:
        still = f"; still growing: {growing_path}" if growing_path else ""
        click.echo(f"wrote {len(sim.files)} frames under {root}{still}")
    return 0
