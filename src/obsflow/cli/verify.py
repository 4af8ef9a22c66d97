"""``obsflow verify``: did every file of this and last month reach every archive?"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import click

from obsflow.atomic import write_atomic
from obsflow.cli._options import (
    collect_garbage_rarely,
    config_option,
    dry_run_option,
    emit_json,
    is_terminal,
    json_option,
)
from obsflow.config import MAIL_TO_REQUIRED, Config, load_config
from obsflow.errors import EXIT_OK, ConfigError, ObsflowError, OutputError, UsageError
from obsflow.transfer.catalog import Catalog
from obsflow.transfer.plan import parse_date
from obsflow.verify.check import Pair, plan_pairs, verify
from obsflow.verify.findings import Report
from obsflow.verify.last import save_last
from obsflow.verify.mail import build_message, send_message, should_send
from obsflow.verify.period import Period, months_period, range_period
from obsflow.verify.report import render_html, render_text, report_dict

__all__ = ["command"]

log = logging.getLogger(__name__)

EPILOG = """\b
Examples:
  obsflow verify                                  this and last month, every hop, sizes
  obsflow verify --checksum --mail                also compare contents; mail the report
  obsflow verify --since 2026-09-01 --until 2026-09-30 -i sha --hop instruments:suth
  obsflow verify --json > report.json; obsflow verify --html /var/www/verify.html
\b
Exit status: 0 everything present and equal, 1 differences found,
2 something could not be checked (a host unreachable, a folder missing).
"""


def _date(text: str | None, option: str) -> date | None:
    if text is None:
        return None
    try:
        return parse_date(text)
    except UsageError as err:
        raise UsageError(err.what, option) from err


def _is_the_daily_check(period: Period, hops: tuple[str, ...], instruments: tuple[str, ...], today: date) -> bool:
    """Whether this run checked what the daily check does: every hop and instrument, this and last month."""
    return not hops and not instruments and period == months_period(["this", "last"], today)


def _period(months: str | None, since: str | None, until: str | None, today: date) -> Period:
    if months is not None and (since or until):
        raise UsageError("give either --months or --since/--until, not both", "--months")
    since_day, until_day = _date(since, "--since"), _date(until, "--until")
    if since_day is not None:
        return range_period(since_day, until_day, today)
    if until_day is not None:
        raise UsageError("--until needs --since", "--until")
    return months_period((months if months is not None else "this,last").split(","), today)  # "": an error


@contextlib.contextmanager
def _progress() -> Iterator[object]:
    """A spinner on a terminal; log lines (for cron) otherwise."""
    if not is_terminal():
        yield lambda step: log.info("%s", step)
        return
    from rich.console import Console

    with Console(stderr=True).status("verifying") as status:
        yield lambda step: status.update(step)


def _dry_run(pairs: list[Pair], period: Period, checksum: bool, as_json: bool) -> int:
    plan = [
        {
            "hop": pair.hop.label,
            "instrument": pair.instrument.name,
            "source_location": str(pair.a.location),
            "dest_location": str(pair.b.location),
            "folders": len(pair.folders),
        }
        for pair in pairs
    ]
    if as_json:
        emit_json({"period": {"first": period.first, "last": period.last}, "checksum": checksum, "checks": plan})
        return EXIT_OK
    click.echo(f"would verify nights {period}{' with checksums' if checksum else ''}:")
    for item in plan:
        click.echo(
            f"  {item['hop']:<24} {item['instrument']:<12} {item['source_location']} -> {item['dest_location']}"
            f"  ({item['folders']} dated folders)"
        )
    return EXIT_OK


@click.command(name="verify", epilog=EPILOG)
@config_option
@click.option(
    "--months",
    metavar="this,last",
    default=None,
    help="Calendar months to check (this, last or YYYY-MM).  [default: this,last]",
)
@click.option("--since", metavar="DATE", help="First night to check (YYYY-MM-DD), instead of --months.")
@click.option("--until", metavar="DATE", help="Last night to check (default and latest: today).")
@click.option("-i", "--instrument", "instruments", multiple=True, metavar="NAME", help="Only this instrument (repeat).")
@click.option("--hop", "hops", multiple=True, metavar="FROM:TO", help="Only this hop, e.g. instruments:suth (repeat).")
@click.option("--checksum", is_flag=True, help="Also compare contents (xxh128, computed where each file lies).")
@click.option("--rehash", is_flag=True, help="With --checksum: hash every file anew instead of trusting the catalog.")
@click.option("--mail", "send_mail", is_flag=True, help="Mail the report as configured in [mail].")
@click.option(
    "--html",
    "html_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Also write the report as an HTML page.",
)
@click.option("--today", hidden=True, help="Pretend today is this date (tests, re-runs).")
@json_option
@dry_run_option
def command(
    config_path: Path,
    months: str | None,
    since: str | None,
    until: str | None,
    instruments: tuple[str, ...],
    hops: tuple[str, ...],
    checksum: bool,
    rehash: bool,
    send_mail: bool,
    html_path: Path | None,
    today: str | None,
    as_json: bool,
    dry_run: bool,
) -> int:
    """Check that every file of this and last month reached both archives.

    For each hop (instruments -> site archive -> remote archive) and instrument, both
    sides are listed in one round trip each and compared: files on A that are not on B,
    files whose size differs and, with --checksum, files whose content differs.  Files
    still being written or copied while the check runs are not alarms.  The report is
    printed (text or --json), optionally written as HTML and mailed.
    """
    if rehash and not checksum:
        raise UsageError("--rehash only makes sense with --checksum", "--rehash")
    collect_garbage_rarely()
    config = _load_config(config_path, send_mail)
    run_day = _date(today, "--today") or date.today()
    period = _period(months, since, until, run_day)
    pairs = plan_pairs(config, period, hops, instruments, today=run_day)
    if dry_run:
        return _dry_run(pairs, period, checksum, as_json)
    report = _check(config, period, pairs, checksum, rehash)
    _print_report(report, as_json)
    # A page that cannot be written must not cost the status page its result, nor the mail.
    html_error = _write_html(html_path, report)
    _record_for_status_page(report, config, is_daily=_is_the_daily_check(period, hops, instruments, run_day))
    if send_mail:
        _mail(report, config, html_error)
    if html_error is not None:
        raise html_error
    return report.exit_code


def _load_config(config_path: Path, send_mail: bool) -> Config:
    """The configuration; ConfigError at once if --mail has no recipient to send to."""
    config = load_config(config_path)
    if send_mail and not config.mail.to:  # now, not on the first morning that has something to report
        raise ConfigError(f"config: mail.to: {MAIL_TO_REQUIRED}", config_path)
    return config


def _check(config: Config, period: Period, pairs: list[Pair], checksum: bool, rehash: bool) -> Report:
    """Run the checks, showing progress; the catalog is opened only when checksums are compared."""
    with contextlib.ExitStack() as stack:
        catalog = stack.enter_context(Catalog(config.catalog_path)) if checksum else None
        progress = stack.enter_context(_progress())
        return verify(config, period, pairs, checksum=checksum, rehash=rehash, catalog=catalog, progress=progress)


def _print_report(report: Report, as_json: bool) -> None:
    if as_json:
        emit_json(report_dict(report))
    else:
        click.echo(render_text(report), nl=False)


def _record_for_status_page(report: Report, config: Config, is_daily: bool) -> None:
    """Keep the daily check's result for the status page; a failure to is a warning, the report stands."""
    if is_daily:
        try:
            save_last(report, config.state_path)
        except OutputError as err:
            log.warning("could not record the result for the status page: %s", err.one_line())
    else:  # a check by hand of a part must not stand for the whole on the page
        log.info("a check of part of the period, hops or instruments: not kept as the status page's last verification")


def _mail(report: Report, config: Config, html_error: OutputError | None) -> None:
    """Mail the report if [mail] wants this one; a mail error is raised, the HTML one only logged before it."""
    if should_send(report, config.mail):
        try:
            send_message(build_message(report, config.mail), config.mail)
        except ObsflowError:
            if html_error is not None:
                log.error("%s", html_error.one_line())  # the mail's error is the one raised
            raise


def _write_html(html_path: Path | None, report: Report) -> OutputError | None:
    """Write the HTML page if asked; the error, if it cannot be written."""
    if html_path is None:
        return None
    try:
        write_atomic(html_path, render_html(report))
    except OutputError as err:
        return err
    return None
