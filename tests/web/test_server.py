"""The status server against a real catalog, a saved verification and a daemon status file."""

from __future__ import annotations

import json
import threading
import time
from datetime import date, timedelta

from obsflow.transfer.catalog import Catalog
from obsflow.web import status
from obsflow.web.pages import human_bytes
from obsflow.web.server import StatusServer, host_allowed, make_server
from tests.web.conftest import Site, serve
from tests.web.reading import fetch, fetch_html, fetch_json, html_tables, table_with
from tests.web.site import PROJECT, SECRETS, save_verification

ROUTES = ("/", "/sync", "/verify", "/filler", "/api/status.json", "/api/sync.json", "/api/verify.json",
          "/api/filler.json")  # fmt: skip


def _last_real_run(site: Site, hop: str, instrument: str):  # type: ignore[no-untyped-def]
    with Catalog(site.config.catalog_path) as catalog:
        return next(r for r in catalog.runs(instrument=instrument, hop=hop) if not r.dry_run)


def test_sync_table_shows_the_last_real_run_of_each_hop_and_instrument(site: Site, server: StatusServer) -> None:
    page = fetch_html(server, "/sync")
    first_hop, second_hop = [t for t in html_tables(page) if t[0][:3] == ["Instrument", "Last sync", "Status"]]
    rows = {row[0]: row for row in first_hop[1:]}
    sha = _last_real_run(site, "instruments:suth", "sha")
    assert sha.copied == 3 and sha.bytes == 3_000_006  # the dry run recorded after it is not "the last sync"
    assert rows["sha"][2:6] == ["incomplete", "3", "3.0 MB", "2 (1 in flight, 1 locked)"]
    assert f'title="{sha.bytes} bytes"' in page
    shoc = _last_real_run(site, "instruments:suth", "shoc")
    assert rows["shoc"][2:6] == ["ok", str(shoc.copied), human_bytes(shoc.bytes), "0"]
    second = {row[0]: row for row in second_hop[1:]}
    assert second["sha"][2] == "failed" and "connection refused" in second["sha"][6]
    assert second["shoc"][1] == "no runs yet"


def test_sync_json_matches_the_catalog(site: Site, server: StatusServer) -> None:
    sync = fetch_json(server, "/api/sync.json")
    assert sync["has_runs"] and sync["error"] is None
    by_hop = {hop["hop"]: {i["instrument"]: i for i in hop["instruments"]} for hop in sync["hops"]}
    for hop, instruments in by_hop.items():
        for name, entry in instruments.items():
            with Catalog(site.config.catalog_path) as catalog:
                real = [r for r in catalog.runs(instrument=name, hop=hop) if not r.dry_run]
                success = catalog.last_success(name, hop)
            if not real:
                assert entry["last_run"] is None
                continue
            run = entry["last_run"]
            assert (run["id"], run["copied"], run["bytes"], run["status"]) == (real[0].id, real[0].copied,
                                                                               real[0].bytes, real[0].status)
            assert run["left_undone"] == sum(getattr(real[0], k) for k in ("in_flight", "locked", "conflicts",
                                                                             "refused", "errors"))
            assert entry["last_success"] == success
    # bytes per day: today's sha run and yesterday's, the dry run left out
    per_day = sync["bytes_per_day"]
    assert per_day["dates"][-1] == date.today().isoformat() and len(per_day["dates"]) == 10
    assert per_day["hops"]["instruments:suth"]["sha"][-2:] == [1_000_000, 3_000_006]
    assert per_day["hops"]["instruments:suth"]["shoc"][-1] == 5_000_000


def test_files_in_the_window_per_host_come_from_the_catalog(site: Site, server: StatusServer) -> None:
    sync = fetch_json(server, "/api/sync.json")
    first = (date.today() - timedelta(days=9)).strftime("%Y/%m%d")
    holdings = {h["instrument"]: h["hosts"] for h in sync["holdings"]}
    with Catalog(site.config.catalog_path) as catalog:
        for name, hosts in holdings.items():
            for host, seen in hosts.items():
                files = [f for f in catalog.files(host, name) if f.path[:9] >= first]
                assert seen == {"files": len(files), "bytes": sum(f.size for f in files)}, (name, host)
    assert holdings["sha"]["instruments"]["files"] == 4  # the 40-night-old file is outside the window
    assert [holdings["sha"][h]["files"] for h in ("suth", "cape")] == [3, 1]
    table = [t for t in html_tables(fetch_html(server, "/")) if t[0] == ["Instrument", "instruments", "suth", "cape"]]
    sha_row = next(row for row in table[0] if row[0] == "sha")
    assert sha_row[1:] == ["4 files / 4.0 MB", "3 files / 3.0 MB", "1 files / 1.0 MB"]


def test_verification_shows_what_is_missing_and_none_when_all_present(site: Site, server: StatusServer) -> None:
    page = fetch_html(server, "/verify")
    rows = table_with(page, "Hop")
    assert rows[1][:5] == ["instruments:suth", "sha", "differences", "3", "1"]
    assert rows[2][:5] == ["instruments:suth", "shoc", "ok", "2", "None"]
    assert rows[3][:5] == ["suth:cape", "sha", "differences", "1", "2"]
    night = (date.today() - timedelta(days=1)).strftime("%Y/%m%d")
    assert f"{night}/SHA_3.fits" in page and f"{night}/SHA_1.fits" in page
    verify = fetch_json(server, "/api/verify.json")
    assert verify["status"] == "differences" and verify["counts"]["missing"] == 3
    assert verify["subject"].startswith("FAILED: 3 missing")


def test_filler_projects_lag_fills_and_errors(site: Site, server: StatusServer) -> None:
    filler = fetch_json(server, "/api/filler.json")
    assert filler["running"] and filler["active_project"] == PROJECT
    (project,) = filler["projects"]
    newest = site.filler.fills[0]
    assert (project["last_scan"], project["pending"]) == (3, 2)
    assert project["latency_s"] == round(newest["filled_at"] - newest["finished_seen_at"], 3)  # type: ignore[operator]
    assert project["quicklook"] == f"/quicklook/{PROJECT}/scan_3.png"
    assert [r["scan"] for r in filler["recent"]] == [3, 2, 1]
    assert filler["failures"][0]["given_up"] and "bank C truncated" in filler["failures"][0]["last_error"]
    page = fetch_html(server, "/filler")
    row = table_with(page, "Project")[1]
    assert row[0] == f"{PROJECT} (active)" and row[1] == "3" and row[4] == "2 scans behind"
    assert row[5] == f"{project['latency_s']:.1f} s after scan end"
    assert "skipped" in page and "bank C truncated" in page
    stalled = filler["failures"][1]  # a project whose own files cannot be read: all its scans wait
    assert (stalled["project"], stalled["scan"], stalled["given_up"]) == ("AGBT26A_999_01", "7 waiting", False)
    assert "7 waiting" in page and "cannot read which scans of AGBT26A_999_01" in page
    recent = table_with(page, "Filled")
    assert [r[2] for r in recent[1:]] == ["3", "2", "1"] and recent[1][5] == f"{newest['seconds']:.2f}"
    code, kind, png = fetch(server, project["quicklook"])
    assert code == 200 and kind == "image/png" and png.startswith(b"\x89PNG")


def test_a_stopped_daemon_reads_not_running(site: Site, server: StatusServer) -> None:
    from obsflow.online.daemon import DAEMON_LOCK
    from obsflow.lock import lock_path, release_lock
    from obsflow.web.status import filler_layout

    release_lock(lock_path(filler_layout(site.config).locks_dir, DAEMON_LOCK))
    assert not fetch_json(server, "/api/filler.json")["running"]
    assert "not running" in fetch_html(server, "/")


def test_empty_site_says_no_runs_yet_and_creates_nothing(empty_site: Site, empty_server: StatusServer) -> None:
    page = fetch_html(empty_server, "/")
    assert "no runs yet" in page and "no verification yet" in page and "has not run on" in page
    sync = fetch_json(empty_server, "/api/sync.json")
    assert not sync["has_runs"] and sync["error"] is None and sync["holdings"] == []
    assert not fetch_json(empty_server, "/api/verify.json")["has_run"]
    assert not fetch_json(empty_server, "/api/filler.json")["has_run"]
    code, kind, body = fetch(empty_server, "/plots/bytes_per_day.png")
    assert code == 200 and body.startswith(b"\x89PNG")
    assert not empty_site.config.catalog_path.exists() and not empty_site.config.state_path.exists()


def test_no_secret_from_the_config_ever_appears(site: Site, server: StatusServer) -> None:
    bodies = {route: fetch(server, route)[2].decode() for route in ROUTES}
    for route, body in bodies.items():
        for secret in SECRETS:
            assert secret not in body, (route, secret)
        assert "cape.invalid:/" not in body and "smtp.invalid" not in body, route
    assert "[hidden]" in bodies["/api/sync.json"]  # the run message was redacted, not dropped


def test_only_get_and_head_and_only_known_paths(server: StatusServer) -> None:
    assert fetch(server, "/", method="POST")[0] == 405
    assert fetch(server, "/api/status.json", method="DELETE")[0] == 405
    code, _, body = fetch(server, "/", method="HEAD")
    assert code == 200 and body == b""
    assert fetch(server, "/nothing-here")[0] == 404
    assert fetch(server, "/quicklook/../../obsflow.toml")[0] == 404
    assert fetch(server, f"/quicklook/{PROJECT}/scan_99.png")[0] == 404


def test_pages_refresh_themselves_and_link_their_json(server: StatusServer) -> None:
    for path, api in (("/", "/api/status.json"), ("/sync", "/api/sync.json"), ("/filler", "/api/filler.json")):
        page = fetch_html(server, path)
        assert '<meta http-equiv="refresh" content="30">' in page and f'href="{api}"' in page
        assert "<script" not in page and "http://" not in page and "https://" not in page  # self-contained


def test_a_page_waits_only_for_the_parts_it_shows(site: Site, server: StatusServer) -> None:
    # The sync part is being computed for another viewer (a big catalog, a slow disk) until released.
    computing, release = threading.Event(), threading.Event()

    def slow_sync() -> object:
        computing.set()
        release.wait(60)
        return status.sync_status(site.config)

    viewer = threading.Thread(target=server.cache.get, args=("sync", slow_sync))
    viewer.start()
    try:
        assert computing.wait(30)
        started = time.monotonic()
        assert PROJECT in fetch_html(server, "/filler")
        assert fetch_json(server, "/api/verify.json")["has_run"]
        assert time.monotonic() - started < 10  # not held up by the sync part
        waiting = threading.Thread(target=fetch_json, args=(server, "/api/sync.json"))
        waiting.start()
        waiting.join(0.5)
        assert waiting.is_alive()  # the sync part's viewers wait for its one computation
    finally:
        release.set()
        viewer.join(60)
    waiting.join(60)
    assert not waiting.is_alive()


def test_a_verification_or_daemon_status_not_a_json_object_is_a_message(site: Site, server: StatusServer) -> None:
    (site.config.state_path / "verify-last.json").write_text("[]")
    status.filler_layout(site.config).status_path.write_text('"idle"')
    page = fetch_html(server, "/")
    assert "cannot read the last verification: not a JSON object" in page
    assert "cannot read the daemon status: not a JSON object" in page
    assert fetch_json(server, "/api/sync.json")["has_runs"]
    code, _, _ = fetch(server, "/plots/fill_latency.png")
    assert code == 200  # the fill logs still give the history


def test_a_damaged_daemon_status_is_a_message_not_an_error_page(site: Site, server: StatusServer) -> None:
    """A daemon status of a shape the page did not expect (projects as a list) was a 500: it is said instead."""
    for content in ('{"projects": ["AGBT26A_042_01"]}', '{"pid": 4242, "recent": [{"proj', '{"failures": [7]}'):
        status.filler_layout(site.config).status_path.write_text(content)
        page = fetch_html(server, "/filler")
        assert "cannot read the daemon status: " in page and "sets it aside" in page
        assert fetch_json(server, "/api/filler.json")["error"].startswith("cannot read the daemon status: ")
        assert fetch(server, "/plots/fill_latency.png")[0] == 200  # the fill logs still give the history


def _damaged(last: dict) -> dict:  # type: ignore[type-arg]
    """Each way a verify-last.json can be JSON but not of the shape ``obsflow verify`` saves, from ``last``."""
    first = last["folders"][0]

    def with_folder(**changes: object) -> dict:  # type: ignore[type-arg]
        return {**last, "folders": [{**first, **changes}, *last["folders"][1:]]}

    without_status = {key: value for key, value in first.items() if key != "status"}
    return {
        "a list": [],
        "no verification keys": {"hops": 3},
        "folders not a list": {**last, "folders": 3},
        "a folder not an object": {**last, "folders": ["sha"]},
        "a folder without its status": {**last, "folders": [without_status]},
        "missing not a list of names": with_folder(missing=[1, 2]),
        "a size difference without its path": with_folder(size_differs=[{"size_a": 1}]),
        "matched not a count": with_folder(matched="3"),
        "period not an object": {**last, "period": ["2026-11-01"]},
        "not_checked not a list": {**last, "not_checked": 5},
    }


def test_a_damaged_verification_is_a_message_in_its_section_not_an_error_page(site: Site, server: StatusServer) -> None:
    """Found by review: a verify-last.json of another shape ({"folders": 3}, a folder without its keys) made
    every page showing the verification a 500.  Now its section says the file is damaged; the rest is intact."""
    path = site.config.state_path / "verify-last.json"
    for name, content in _damaged(json.loads(path.read_text())).items():
        path.write_text(json.dumps(content))
        for page in (fetch_html(server, "/"), fetch_html(server, "/verify")):  # 200, or fetch_html fails
            section = page.split('<section id="verify">', 1)[1].split("</section>", 1)[0]
            (message,) = [line for line in section.splitlines() if 'class="bad"' in line]
            assert message.startswith('<p class="bad">cannot read the last verification: '), (name, message)
            assert f"{path} is damaged" in message, (name, message)
            assert "no verification yet" in section and "<table>" not in section, name
        overview = fetch_html(server, "/")
        assert [t for t in html_tables(overview) if t[0][:2] == ["Instrument", "Last sync"]], name  # the sync part
        assert PROJECT in overview.split('<section id="filler">', 1)[1], name  # and the filler's
        verify = fetch_json(server, "/api/verify.json")
        assert verify["has_run"] is False and f"{path} is damaged" in verify["error"], name


def test_content_differs_says_not_compared_unless_contents_were(site: Site, server: StatusServer) -> None:
    """Found by review: a verification without --checksum showed "Content differs: 0" for every folder, though
    no content had been compared.  It says "not compared" now; with --checksum the count stands, 0 included,
    except where the contents could not be hashed."""

    def content_differs(page_path: str) -> dict[tuple[str, str], str]:
        table = table_with(fetch_html(server, page_path), "Hop")
        column = table[0].index("Content differs")
        return {(row[0], row[1]): row[column] for row in table[1:]}

    sha, shoc, cape = ("instruments:suth", "sha"), ("instruments:suth", "shoc"), ("suth:cape", "sha")
    for page_path in ("/", "/verify"):
        assert content_differs(page_path) == {sha: "not compared", shoc: "not compared", cape: "not compared"}
    save_verification(site.config, checksum=True)
    for page_path in ("/", "/verify"):
        assert content_differs(page_path) == {sha: "0", shoc: "1", cape: "not compared"}


def _cells(*texts: str) -> str:
    return "".join(f"<td>{text}</td>" for text in texts)


def test_a_folder_not_checked_shows_no_none_or_0_for_its_missing_and_differing_files(
    site: Site, server: StatusServer
) -> None:
    """Found by review: a folder whose host could not be reached (so nothing of it was listed) showed a green
    "None" under Missing and 0 under "Size differs" beside its error, reading as "every file present".  Those
    cells, and Present, say "not checked" now, in no colour; a folder that was checked keeps its None and 0."""
    save_verification(site.config, cape_unreachable=True)
    fine, down = ("instruments:suth", "shoc"), ("suth:cape", "sha")
    for page_path in ("/", "/verify"):
        page = fetch_html(server, page_path)
        table = table_with(page, "Hop")
        cells = {(row[0], row[1]): dict(zip(table[0], row, strict=True)) for row in table[1:]}
        assert [cells[fine][k] for k in ("Status", "Present", "Missing", "Size differs")] == ["ok", "2", "None", "0"]
        said = [cells[down][k] for k in ("Status", "Present", "Missing", "Size differs", "Content differs")]
        assert said == ["not checked"] * 4 + ["not compared"], page_path
        assert "cannot reach host" in cells[down]["Not checked"]
        section = page.split('<section id="verify">', 1)[1].split("</section>", 1)[0]
        rows = {key: row for key in (fine, down) for row in section.split("<tr>") if row.startswith(_cells(*key))}
        assert '<span class="ok">None</span>' in rows[fine], page_path  # green: all present
        assert 'class="ok"' not in rows[down], page_path  # nothing of it reads as all well
    verify = fetch_json(server, "/api/verify.json")  # the API as before: the error beside empty lists
    folder = next(f for f in verify["folders"] if (f["hop"], f["instrument"]) == down)
    assert folder["status"] == "not checked" and "cannot reach host" in folder["error"]
    assert (folder["missing_count"], folder["missing"], folder["size_differs"]) == (0, [], [])
    assert verify["counts"]["not_checked"] == 1 and verify["status"] == "not checked"


def test_an_error_while_answering_is_a_short_500_and_the_server_goes_on(  # type: ignore[no-untyped-def]
    site: Site, server: StatusServer, caplog, monkeypatch
) -> None:
    from obsflow.web import server as server_module

    def unforeseen(config: object) -> None:  # a bug in reading the filler's part
        raise AttributeError("'list' object has no attribute 'items'")

    monkeypatch.setitem(server_module._PARTS, "filler", unforeseen)
    code, kind, body = fetch(server, "/filler")
    assert (code, kind, body) == (500, "text/plain; charset=utf-8", b"internal error (logged)\n")
    assert "Traceback" in caplog.text and "AttributeError" in caplog.text
    assert fetch_html(server, "/sync")  # still serving


def test_only_requests_for_this_server_by_its_own_names_are_answered(server: StatusServer) -> None:
    # A DNS-rebinding page (evil.example resolved to 127.0.0.1) reaches the port with its own name.
    port = server.server_address[1]
    for host in ("evil.example", f"evil.example:{port}", "localhost.evil.example", "127.0.0.1.nip.io"):
        code, _, body = fetch(server, "/api/status.json", host=host)
        assert (code, body) == (421, b"unknown host name\n"), host
    for host in ("localhost", f"localhost:{port}", "LOCALHOST.", f"127.0.0.1:{port}", f"[::1]:{port}", "[::1]",
                 "192.0.2.7"):  # an address cannot be rebound: a LAN address of a server bound to 0.0.0.0
        assert fetch(server, "/api/status.json", host=host)[0] == 200, host


def test_the_configured_host_name_is_answered_too(site: Site) -> None:
    for server in serve(site.config, "localhost"):
        assert fetch(server, "/", host="localhost")[0] == 200
    assert host_allowed("archive.saao.ac.za:8080", "archive.saao.ac.za")
    assert host_allowed("Archive.SAAO.ac.za", "archive.saao.ac.za")
    assert not host_allowed("archive.saao.ac.za.evil.example", "archive.saao.ac.za")


def test_a_server_bound_to_every_address_answers_to_this_machines_own_names(site: Site) -> None:
    import socket

    for server in serve(site.config, "127.0.0.1"):
        port = server.server_address[1]
        for name in (socket.gethostname(), f"{socket.getfqdn()}:{port}"):
            assert fetch(server, "/", host=name)[0] == 200, name
    assert host_allowed(socket.gethostname(), "0.0.0.0")


def test_bytes_per_day_count_every_run_of_the_window_however_many(site: Site, server: StatusServer) -> None:
    # Found by review: only the latest 5000 runs were read, so with many instruments or hourly syncs
    # the window's first days read 0 bytes copied. Here 5000 empty runs follow yesterday's sha run.
    yesterday = site.runs[0]
    with Catalog(site.config.catalog_path) as catalog:
        for i in range(5000):
            run_id = catalog.start_run("suth:cape", "shoc", now=yesterday.started + 60 + i)
            catalog.finish_run(run_id, "ok", {"copied": 0, "bytes": 0})
    per_day = fetch_json(server, "/api/sync.json")["bytes_per_day"]
    assert per_day["hops"]["instruments:suth"]["sha"][-2:] == [1_000_000, 3_000_006]


def test_the_last_real_run_shows_after_many_dry_runs(site: Site, server: StatusServer) -> None:
    # Found by review: the page looked for a real run among the latest 20 only; after 20 dry runs
    # (an operator trying options) the instrument read "no runs yet" and the page "no runs yet".
    real = _last_real_run(site, "instruments:suth", "shoc")
    with Catalog(site.config.catalog_path) as catalog:
        for i in range(25):
            run_id = catalog.start_run("instruments:suth", "shoc", dry_run=True, now=real.started + 60 + i)
            catalog.finish_run(run_id, "ok", {"copied": 7, "bytes": 7})
    sync = fetch_json(server, "/api/sync.json")
    (shoc,) = [i for i in sync["hops"][0]["instruments"] if i["instrument"] == "shoc"]
    assert shoc["last_run"]["id"] == real.id
    rows = {row[0]: row for row in table_with(fetch_html(server, "/sync"), "Instrument")[1:]}
    assert rows["shoc"][2:5] == ["ok", str(real.copied), human_bytes(real.bytes)]


def test_a_viewer_that_sends_nothing_is_let_go(site: Site) -> None:
    # Found by review: a connection that never finished its request held its server thread for
    # ever (no socket timeout), so idle or slow clients piled up threads without end.
    import socket

    server = make_server(site.config, "127.0.0.1", 0, cache_s=0.0)
    server.client_timeout_s = 1.0
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with socket.create_connection(server.server_address[:2], timeout=20) as idle:
            idle.sendall(b"GET / HTTP/1.1\r\n")  # and never the rest
            assert fetch(server, "/api/verify.json")[0] == 200  # others are served meanwhile
            started = time.monotonic()
            idle.recv(1024)  # b"" (closed) or a 408: either way the server gave up on it
            assert time.monotonic() - started < 10
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_the_verification_says_how_old_it_is(site: Site, server: StatusServer) -> None:
    # Found by review: the daily check's result had no age on the page, so one whose timer stopped
    # weeks ago read as this morning's to anyone not reading its date closely.
    path = site.config.state_path / "verify-last.json"
    last = json.loads(path.read_text())
    last["ended"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(time.time() - 3 * 86400))
    path.write_text(json.dumps(last))
    page = fetch_html(server, "/verify")
    assert f"{last['ended']} (3.0 d ago)" in page


def test_the_verification_times_are_in_the_pages_zone_like_every_other_time(
    site: Site, server: StatusServer, monkeypatch
) -> None:
    """Found by review: the last verification's times were the report's UTC strings beside the
    local times of everything else on the page."""
    monkeypatch.setenv("TZ", "Africa/Johannesburg")  # SAST, UTC+2, as at SAAO
    time.tzset()
    try:
        page = fetch_html(server, "/")
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    (checked,) = [line for line in page.splitlines() if "checked " in line and "nights" in line]
    assert checked.count("SAST") == 2 and "UTC" not in checked, checked
