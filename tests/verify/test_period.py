"""Which nights a verification covers."""

from datetime import date

import pytest

from obsflow.errors import UsageError
from obsflow.verify.period import Period, months_period, range_period


def test_this_and_last_month_end_today():
    assert months_period(["this", "last"], date(2026, 11, 23)) == Period(date(2026, 10, 1), date(2026, 11, 23))


def test_january_reaches_back_into_december():
    assert months_period(["last", "this"], date(2027, 1, 2)) == Period(date(2026, 12, 1), date(2027, 1, 2))


def test_last_month_alone_is_whole():
    period = months_period(["last"], date(2026, 3, 15))
    assert period == Period(date(2026, 2, 1), date(2026, 2, 28))
    assert len(period.dates) == 28


def test_named_months():
    assert months_period(["2026-01", "2026-02"], date(2026, 11, 1)) == Period(date(2026, 1, 1), date(2026, 2, 28))


@pytest.mark.parametrize("words", [["soon"], ["2026-13"], ["2026-01", "2026-03"], ["2027-01"], []])
def test_bad_months_are_usage_errors(words):
    with pytest.raises(UsageError):
        months_period(words, date(2026, 11, 23))


def test_range_defaults_to_today_and_refuses_backwards():
    assert range_period(date(2026, 11, 20), None, date(2026, 11, 23)).dates[-1] == date(2026, 11, 23)
    with pytest.raises(UsageError, match="before"):
        range_period(date(2026, 11, 20), date(2026, 11, 1), date(2026, 11, 23))


def test_a_range_ends_today_at_the_latest_as_months_do():
    """Found by the documentation audit: `--until` in the future reported a period of nights not yet
    observed (the months never ask for nights after today); a range starting after today is refused."""
    today = date(2026, 12, 2)
    assert range_period(date(2026, 11, 20), date(2026, 12, 31), today) == Period(date(2026, 11, 20), today)
    with pytest.raises(UsageError, match="future"):
        range_period(date(2026, 12, 3), None, today)
