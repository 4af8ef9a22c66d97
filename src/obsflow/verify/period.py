"""Which nights a verification covers: whole calendar months, or a date range.  Pure.

``--months this,last`` (the default) means from the first day of last month up to today;
days in the future are never asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta

from obsflow.errors import UsageError

__all__ = ["MONTH_WORDS", "Period", "months_period", "range_period"]

MONTH_WORDS = ("this", "last")


@dataclass(frozen=True)
class Period:
    """The nights from ``first`` to ``last`` inclusive."""

    first: date
    last: date

    @property
    def dates(self) -> list[date]:
        return [self.first + timedelta(days=i) for i in range((self.last - self.first).days + 1)]

    def __str__(self) -> str:
        return f"{self.first.isoformat()} .. {self.last.isoformat()}"


def _first_of_month(day: date, back: int) -> date:
    month_index = day.year * 12 + day.month - 1 - back
    return date(month_index // 12, month_index % 12 + 1, 1)


def months_period(words: Sequence[str], today: date) -> Period:
    """The months named by ``words`` (``this``, ``last``, or ``YYYY-MM``) as one period ending by ``today``.

    The months must be contiguous (``this,last`` or ``last`` alone); a UsageError says why not.
    """
    firsts = []
    for word in (w.strip().lower() for w in words):
        if word in MONTH_WORDS:
            firsts.append(_first_of_month(today, MONTH_WORDS.index(word)))
            continue
        try:
            year, month = word.split("-")
            firsts.append(date(int(year), int(month), 1))
        except ValueError:
            raise UsageError(f"not a month: {word!r} (use this, last or YYYY-MM)", "--months") from None
    if not firsts:
        raise UsageError("no month given", "--months")
    firsts = sorted(set(firsts))
    for earlier, later in zip(firsts, firsts[1:], strict=False):
        if _first_of_month(later, 1) != earlier:
            raise UsageError("months must follow each other (e.g. this,last)", "--months")
    try:
        end = _first_of_month(firsts[-1], -1) - timedelta(days=1)
    except ValueError:  # December 9999: its next month is past what a date can hold
        raise UsageError(f"month {firsts[-1]:%Y-%m} is out of range", "--months") from None
    last = min(end, today)
    if last < firsts[0]:
        raise UsageError(f"{firsts[0]:%Y-%m} lies in the future", "--months")
    return _in_calendar(Period(firsts[0], last), "--months")


def range_period(since: date, until: date | None, today: date) -> Period:
    """``--since``/``--until`` (until defaults to today); as with months, nights after today are not asked for."""
    if since > today:
        raise UsageError(f"--since {since.isoformat()} lies in the future", "--since")
    last = min(until or today, today)
    if last < since:
        raise UsageError(f"--until {last.isoformat()} is before --since {since.isoformat()}", "--since")
    return _in_calendar(Period(since, last), "--since")


def _in_calendar(period: Period, option: str) -> Period:
    """``period``, if the days around it are dates too: an undated layout's window runs from the first
    day's midnight (as unix time, a day back is looked at) to the midnight after the last."""
    if period.first == date.min or period.last == date.max:
        raise UsageError(f"the period {period} leaves the calendar (years 1 to 9999)", option)
    return period
