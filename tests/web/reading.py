"""Fetching from the status server and reading its HTML tables back as text."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from html.parser import HTMLParser
from typing import Any

from obsflow.web.server import StatusServer


def fetch(server: StatusServer, path: str, method: str = "GET", host: str | None = None) -> tuple[int, str, bytes]:
    """``(status, content type, body)`` of one request to the running server (``host``: its Host header)."""
    headers = {} if host is None else {"Host": host}
    request = urllib.request.Request(server.url.rstrip("/") + path, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers["Content-Type"], err.read()


def fetch_json(server: StatusServer, path: str) -> Any:
    code, kind, body = fetch(server, path)
    assert code == 200 and kind == "application/json", (code, kind)
    return json.loads(body)


def fetch_html(server: StatusServer, path: str) -> str:
    code, kind, body = fetch(server, path)
    assert code == 200 and kind.startswith("text/html"), (code, kind)
    return body.decode()


class _Tables(HTMLParser):
    """Collects every table as rows of cell texts (whitespace collapsed)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append(" ".join("".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def html_tables(page: str) -> list[list[list[str]]]:
    parser = _Tables()
    parser.feed(page)
    return parser.tables


def table_with(page: str, header: str) -> list[list[str]]:
    """The first table whose header row starts with ``header``."""
    for table in html_tables(page):
        if table and table[0] and table[0][0] == header:
            return table
    raise AssertionError(f"no table headed {header!r}")
