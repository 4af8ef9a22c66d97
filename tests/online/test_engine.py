"""The state engine: fills every finished scan once, in order, with back-off on failure."""

from obsflow.online.engine import Engine
from obsflow.online.events import ScanEvent, ScanKey


def finished(project, scan, ts="2026_11_23_01:00:00"):
    return ScanEvent("finished", project, ScanKey(scan, ts), ("vegas",), 100.0)


def test_fills_missed_scans_in_order_and_never_twice():
    engine = Engine()
    for scan in (1, 2, 3, 4):
        engine.observe(ScanEvent("started", "P", ScanKey(scan, "t"), (), 0.0))
        engine.observe(finished("P", scan, "t"))
    engine.already_filled("P", {ScanKey(2, "t")})
    actions = engine.next_actions(now=0)
    assert [a.key.scan for a in actions] == [1, 3, 4]
    for action in actions:
        engine.filled(action)
    assert engine.next_actions(now=0) == []
    engine.observe(finished("P", 3, "t"))  # a repeated event changes nothing
    assert engine.next_actions(now=0) == []


def test_started_scan_is_not_filled_until_finished():
    engine = Engine()
    engine.observe(ScanEvent("started", "P", ScanKey(7, "t"), (), 0.0))
    assert engine.next_actions(now=0) == []
    assert engine.project("P").started == ScanKey(7, "t")
    assert engine.active_project == "P"


def test_failure_backs_off_then_gives_up():
    engine = Engine(retry_limit=3, backoff_s=10)
    engine.observe(finished("P", 1))
    engine.already_filled("P", set())
    action = engine.next_actions(now=0)[0]
    failure = engine.failed(action, "backend file truncated", now=0)
    assert failure.retry_at == 10 and not failure.given_up
    assert engine.next_actions(now=5) == []
    retry = engine.next_actions(now=10)[0]
    assert retry.attempt == 2
    engine.failed(retry, "again", now=10)  # next retry after 20 s
    assert engine.next_actions(now=29) == []
    last = engine.next_actions(now=30)[0]
    assert engine.failed(last, "again", now=30).given_up
    assert engine.next_actions(now=10_000) == []
    assert engine.pending("P") == []


def test_project_change_is_tracked():
    engine = Engine()
    engine.observe(ScanEvent("started", "A", ScanKey(1, "t1"), (), 1.0))
    engine.observe(ScanEvent("started", "B", ScanKey(1, "t2"), (), 2.0))
    assert engine.active_project == "B"
    assert [p for _, p in engine.project_changes] == ["A", "B"]


def test_nothing_is_filled_before_the_output_files_are_read():
    # Until the engine knows which scans the files hold, a fill could only repeat one (found by review).
    engine = Engine()
    engine.observe(finished("P", 1))
    assert engine.next_actions(now=0) == []
    assert engine.has_work()  # a catch-up run waits for it
    engine.already_filled("P", set())
    assert [a.key.scan for a in engine.next_actions(now=0)] == [1]


def test_transient_failures_never_give_up_but_back_off_capped():
    engine = Engine(retry_limit=2, backoff_s=1, max_backoff_s=8)
    engine.observe(finished("P", 1))
    engine.already_filled("P", set())
    for attempt in range(10):
        action = engine.next_actions(now=1e6 * attempt)[0]
        failure = engine.failed(action, "lock held", now=0, counts=False)
    assert not failure.given_up and failure.attempts == 10 and failure.retry_at == 8
    assert engine.failed(engine.next_actions(now=1e9)[0], "truncated", now=0).counted == 1


def test_the_try_before_giving_up_is_marked_last_and_transient_failures_do_not_bring_it_closer():
    # The last try may fill the banks whose files came and leave out one that never did.
    engine = Engine(retry_limit=3, backoff_s=1)
    engine.observe(finished("P", 1))
    engine.already_filled("P", set())
    first = engine.next_actions(now=0)[0]
    assert not first.is_last_try
    engine.failed(first, "bank file missing", now=0)
    engine.failed(engine.next_actions(now=1e6)[0], "lock held", now=1e6, counts=False)
    second = engine.next_actions(now=2e6)[0]
    assert second.attempt == 3 and not second.is_last_try  # one counted failure so far
    engine.failed(second, "bank file missing", now=2e6)
    assert engine.next_actions(now=3e6)[0].is_last_try
    single = Engine(retry_limit=1)
    single.observe(finished("P", 1))
    single.already_filled("P", set())
    assert single.next_actions(now=0)[0].is_last_try  # no retries: the first try is the last
