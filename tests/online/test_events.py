"""JsonLinesSource: events from a file or a socket, whole lines only, never blocking (found by review)."""

from __future__ import annotations

import socket
import threading

from obsflow.online.events import JsonLinesSource, ScanEvent, ScanKey

LINE = ScanEvent("finished", "P", ScanKey(3, "2026_01_01_00:00:00"), ("vegas",)).to_json() + "\n"


def test_a_line_written_in_two_pieces_is_one_event(tmp_path):
    path = tmp_path / "feed.jsonl"
    with open(path, "w") as writer, open(path) as reader:
        source = JsonLinesSource(reader)
        writer.write(LINE[:30])
        writer.flush()
        assert source.poll() == []  # not a whole line yet: kept for the next poll
        writer.write(LINE[30:])
        writer.flush()
        (event,) = source.poll()
    assert (event.kind, event.project, event.key) == ("finished", "P", ScanKey(3, "2026_01_01_00:00:00"))


def test_a_socket_feed_never_blocks_the_daemon():
    ours, theirs = socket.socketpair()
    with ours, theirs:
        source = JsonLinesSource(theirs.makefile("r"))
        results: list[list[ScanEvent]] = []
        poller = threading.Thread(target=lambda: results.extend([source.poll(), source.poll()]), daemon=True)
        ours.sendall(LINE[:10].encode())
        poller.start()
        poller.join(3)
        assert not poller.is_alive(), "poll() blocked on the socket"
        assert results == [[], []]
        ours.sendall(LINE[10:].encode() + LINE.encode())
        assert [e.key.scan for e in _poll_until(source, 2)] == [3, 3]


def _poll_until(source: JsonLinesSource, count: int) -> list[ScanEvent]:
    events: list[ScanEvent] = []
    for _ in range(200):
        events += source.poll()
        if len(events) >= count:
            break
        threading.Event().wait(0.01)
    return events


def test_a_raw_root_that_cannot_be_listed_fails_every_poll_not_only_the_first(tmp_path) -> None:
    """Its mtime unchanged, the next poll must not pass for a good one (the daemon would log 'available again')."""
    import os
    import time

    import pytest

    from obsflow.errors import InputError
    from obsflow.online.events import ScanLogSource

    raw = tmp_path / "raw"
    raw.write_text("not a folder: stat works, listing fails (as EIO on a failing mount)")
    os.utime(raw, (time.time() - 3600,) * 2)
    source = ScanLogSource(raw, read_log=lambda folder: [], full_listing_s=3600)
    for _ in range(2):
        with pytest.raises(InputError, match="cannot read raw data root"):
            source.poll()
