"""``obsflow simulate``: write a simulated GBT raw project (ScanLog, GO, Antenna, LO1A, IF, Rcvr, VEGAS)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click

from obsflow.cli._options import dry_run_option, emit_json, is_terminal, json_option
from obsflow.errors import UsageError
from obsflow.simulate.telescope import PROCEDURES, SimEvent, TelescopeSimulator, TelescopeSpec, plan_scans

__all__ = ["command"]

EPILOG = """\b
Examples:
  obsflow simulate raw/ --scans 4 --procedure OnOff --banks 2 --channels 4096 --integrations 30
  -> raw/AGBT26A_001_01/ScanLog.fits, GO/, Antenna/, LO1A/, IF/, Rcvr1_2/, VEGAS/<timestamp>A.fits ...
  obsflow simulate raw/ --procedure Track --scans 3 --realtime     # as slowly as a telescope
  obsflow simulate raw/ --tsys 25 --tcal 1.7 --line-peak 2 --line-width-kms 20 --seed 7 --json
"""


def _start_time(text: str | None) -> datetime:
    if text is None:
        return datetime.now(UTC).replace(microsecond=0)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as err:
        raise UsageError(f"--start: not an ISO time: {text!r}") from err
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@click.command("simulate", epilog=EPILOG)
@click.argument("out_dir", metavar="OUT_DIR", type=click.Path(path_type=Path, file_okay=False))
@click.option("--project", default="AGBT26A_001_01", show_default=True, help="Project (session) id.")
@click.option("--scans", type=click.IntRange(min=1), default=2, show_default=True, help="Number of scans.")
@click.option("--procedure", type=click.Choice(PROCEDURES), default="OnOff", show_default=True)
@click.option("--banks", type=click.IntRange(1, 8), default=1, show_default=True, help="VEGAS banks (A..H).")
@click.option("--pols", type=click.IntRange(1, 2), default=2, show_default=True, help="Polarizations per feed.")
@click.option("--feeds", type=click.IntRange(1, 2), default=1, show_default=True)
@click.option("--channels", type=click.IntRange(1024, 32768), default=4096, show_default=True)
@click.option("--integrations", type=click.IntRange(min=1), default=10, show_default=True, help="Per scan.")
@click.option("--integration-time", "integration_s", type=click.FloatRange(min=0, min_open=True), default=1.0,
              show_default=True, help="Seconds per integration.")  # fmt: skip
@click.option("--bandwidth-mhz", type=click.FloatRange(min=0, min_open=True), default=23.4375, show_default=True)
@click.option("--tsys", "tsys_k", type=float, default=20.0, show_default=True, help="System temperature (K).")
@click.option("--tcal", "tcal_k", type=float, default=1.5, show_default=True, help="Noise-diode temperature (K).")
@click.option("--no-cal", is_flag=True, help="No noise-diode switching (SWTCHSIG TPNOCAL).")
@click.option("--line-peak", "line_peak_k", type=float, default=2.0, show_default=True, help="Line peak (K).")
@click.option("--line-width-kms", type=float, default=20.0, show_default=True, help="Line FWHM (km/s).")
@click.option("--line-width-khz", type=float, default=None, help="Line FWHM in kHz (overrides --line-width-kms).")
@click.option("--line-freq-mhz", type=float, default=1420.405752, show_default=True, help="Line sky frequency.")
@click.option("--centre-freq-mhz", type=float, default=None, help="Bank A centre frequency (default: the line's).")
@click.option("--circular", is_flag=True, help="Circular polarization (RR/LL) instead of linear (XX/YY).")
@click.option("--start", "start_text", metavar="ISO", help="First scan start, UTC (default: now).")
@click.option("--first-scan", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--realtime", is_flag=True, help="Take as long as the telescope would (same as --realtime-factor 1).")
@click.option("--realtime-factor", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Run this many times faster than real time.")  # fmt: skip
@dry_run_option
@json_option
def command(out_dir: Path, project: str, scans: int, procedure: str, banks: int, pols: int, feeds: int, channels: int,
            integrations: int, integration_s: float, bandwidth_mhz: float, tsys_k: float, tcal_k: float, no_cal: bool,
            line_peak_k: float, line_width_kms: float, line_width_khz: float | None, line_freq_mhz: float,
            centre_freq_mhz: float | None, circular: bool, start_text: str | None, first_scan: int, seed: int,
            realtime: bool, realtime_factor: float | None, dry_run: bool, as_json: bool) -> int:  # fmt: skip
    """Write a simulated GBT raw project into OUT_DIR/<PROJECT>/, scan by scan, as the telescope does.

    Each scan's files are listed in ScanLog.fits with SCAN STARTING at its start and
    SCAN FINISHED at its end; the VEGAS spectra carry the given Tsys and Tcal and, on
    source, a Gaussian line of the given peak, width and frequency.
    """
    spec = TelescopeSpec(
        project=project, scans=scans, procedure=procedure,  # type: ignore[arg-type]
        banks=banks, pols=pols, feeds=feeds,
        channels=channels, integrations=integrations, integration_s=integration_s, bandwidth_hz=bandwidth_mhz * 1e6,
        tsys_k=tsys_k, tcal_k=tcal_k, cal_switching=not no_cal, line_peak_k=line_peak_k,
        line_freq_hz=line_freq_mhz * 1e6, line_fwhm_kms=line_width_kms,
        line_fwhm_hz=None if line_width_khz is None else line_width_khz * 1e3,
        centre_freq_hz=None if centre_freq_mhz is None else centre_freq_mhz * 1e6, circular=circular, seed=seed,
        start=_start_time(start_text), first_scan=first_scan,
    )  # fmt: skip
    plans = plan_scans(spec)  # validates before anything is written
    project_dir = out_dir / project
    if (project_dir / "ScanLog.fits").exists():
        raise UsageError("project already has a ScanLog.fits; choose another --project or folder", project_dir)
    if dry_run:
        rows = [{"scan": p.number, "timestamp": p.timestamp, "procname": p.procname, "procseqn": p.procseqn,
                 "on_source": p.is_on_source} for p in plans]  # fmt: skip
        if as_json:
            emit_json({"project_dir": str(project_dir), "dry_run": True, "scans": rows})
        else:
            for row in rows:
                click.echo(f"would write scan {row['scan']} {row['timestamp']} {row['procname']} seq {row['procseqn']}")
        return 0
    factor = realtime_factor if realtime_factor is not None else (1.0 if realtime else None)
    simulator = TelescopeSimulator(spec, out_dir)

    def show(event: SimEvent) -> None:
        if not as_json:
            click.echo(f"scan {event.scan} {event.kind} ({event.timestamp})", err=is_terminal())

    summary = simulator.run(on_event=show, realtime_factor=factor)
    if as_json:
        emit_json(summary.to_json())
    else:
        click.echo(f"wrote {len(summary.scans)} scans ({summary.files} files) to {summary.project_dir}")
    return 0
