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
