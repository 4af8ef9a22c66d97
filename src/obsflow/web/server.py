"""The read-only HTTP server of ``obsflow serve`` (stdlib ``ThreadingHTTPServer``).

Routes: the pages in :data:`obsflow.web.pages.PAGES`, a JSON document beside each
(``/api/status.json``, ``/api/sync.json``, ``/api/verify.json``, ``/api/filler.json``), the plots
(``/plots/bytes_per_day.png``, ``/plots/fill_latency.png``) and the filler's quick looks
(``/quicklook/<PROJ>/scan_<N>.png``).  Only GET and HEAD; nothing is ever written.  Only requests
naming this server in their Host header are answered (see :func:`host_allowed`; 421 otherwise);
a viewer that sends nothing or stops reading is let go after ``client_timeout_s``.
Each part of the status (sync, verify, filler) is gathered at most once per ``cache_s`` for all
viewers, and a page waits only for the parts it shows.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from obsflow.config import Config
from obsflow.errors import UsageError
from obsflow.web import plots, status
from obsflow.web.pages import PAGES, render_page
from obsflow.web.quicklook import quicklook_path

__all__ = ["StatusServer", "host_allowed", "make_server"]

log = logging.getLogger(__name__)

_QUICKLOOK = re.compile(r"^/quicklook/([A-Za-z0-9][A-Za-z0-9_.-]*)/scan_(\d{1,9})\.png$")
_CSP = "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"
_API = {
    "/api/status.json": lambda s: s,
    "/api/sync.json": lambda s: {"generated": s["generated"], **s["sync"]},
    "/api/verify.json": lambda s: {"generated": s["generated"], **s["verify"]},
    "/api/filler.json": lambda s: {"generated": s["generated"], **s["filler"]},
}


#: the parts of the status each route shows (the others: all of them)
_PARTS = {"sync": status.sync_status, "verify": status.verify_status, "filler": status.filler_status}
_NEEDS = {
    "/sync": ("sync",), "/verify": ("verify",), "/filler": ("filler",), "/api/sync.json": ("sync",),
    "/api/verify.json": ("verify",), "/api/filler.json": ("filler",), "/plots/bytes_per_day.png": ("sync",),
}  # fmt: skip


class _Cache:
    """Values computed at most once per ``ttl_s`` (the status reads the catalog; viewers may be many).

    One lock per key: viewers of a value wait for its one computation, not for other values'.
    """

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._values: dict[str, tuple[float, Any]] = {}

    def get(self, key: str, compute: Callable[[], Any]) -> Any:
        with self._lock(key):
            stamp, value = self._values.get(key, (0.0, None))
            if time.monotonic() - stamp < self.ttl_s and value is not None:
                return value
            value = compute()
            self._values[key] = (time.monotonic(), value)
            return value

    def _lock(self, key: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(key, threading.Lock())


def host_allowed(header: str | None, bind_host: str) -> bool:
    """Whether a request's Host header names this server: ``localhost``, the host it binds, or an address.

    A DNS-rebinding page (a name of the attacker's turned to 127.0.0.1) sends its own name; an
    address cannot be rebound, so a server bound to 0.0.0.0 is still reached by its LAN address.
    A request without the header (HTTP/1.0, not a browser) is answered.  This machine's own
    names count too (a server bound to every address is reached by them).
    """
    if header is None:
        return True
    name = _host_name(header)
    if name in ("localhost", _host_name(bind_host), *_own_names()):
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


@functools.cache
def _own_names() -> tuple[str, ...]:
    """This machine's host name and fully qualified name, as a Host header carries them."""
    return tuple({_host_name(socket.gethostname()), _host_name(socket.getfqdn())})


def _host_name(host: str) -> str:
    """The name in a Host header: lower case, without the port, the IPv6 brackets or a final dot."""
    host = host.strip().lower()
    if host.startswith("["):
        host = host[1:].split("]", 1)[0]
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")


class StatusServer(ThreadingHTTPServer):
    """The status server for one config; ``url`` says where it listens."""

    daemon_threads = True
    client_timeout_s = 30.0  # a viewer's time to send its request, and to take each part of the answer

    def __init__(self, config: Config, host: str, port: int, refresh_s: int = 30, cache_s: float = 2.0) -> None:
        self.config = config
        self.refresh_s = refresh_s
        self.cache = _Cache(cache_s)
        self.filler_root = status.filler_layout(config).root if config.has_filler else None
        self.bind_host = host
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET  # "::1" as well as "127.0.0.1"
        super().__init__((host, port), _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        shown = f"[{host}]" if ":" in str(host) else str(host)
        return f"http://{shown}:{port}/"

    def status(self, parts: Iterable[str] = tuple(_PARTS)) -> dict[str, Any]:
        """``generated`` and the ``parts`` asked for (keys of ``status.full_status``), each from the cache."""
        out: dict[str, Any] = {"generated": time.time()}
        for part in parts:
            out[part] = self.cache.get(part, lambda part=part: _PARTS[part](self.config))  # type: ignore[misc]
        return out


def make_server(config: Config, host: str, port: int, refresh_s: int = 30, cache_s: float = 2.0) -> StatusServer:
    """Bind the status server (port 0: any free port); UsageError if the address cannot be used."""
    if not host.strip():  # the socket would take "" for every address
        raise UsageError("no address to listen on: the host is empty (127.0.0.1 is this machine only)",
                         "--host / [web] host")
    if not 0 <= port <= 65535:
        raise UsageError(f"cannot listen on port {port}: a port is 0 to 65535", "[web] port")
    try:
        return StatusServer(config, host, port, refresh_s, cache_s)
    except OSError as err:
        raise UsageError(f"cannot listen on {host}:{port}: {err.strerror or err}", "--host/--port") from err


class _Handler(BaseHTTPRequestHandler):
    server: StatusServer
    server_version = "obsflow"
    sys_version = ""

    def setup(self) -> None:
        # Without a timeout a viewer that connects and sends nothing (or reads nothing) holds its thread for ever.
        self.timeout = self.server.client_timeout_s
        super().setup()

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._answer(send_body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._answer(send_body=False)

    def _refuse(self) -> None:
        self._send(HTTPStatus.METHOD_NOT_ALLOWED, "text/plain; charset=utf-8", b"read-only\n", True, allow="GET, HEAD")

    do_POST = do_PUT = do_DELETE = do_PATCH = _refuse  # noqa: N815

    def _answer(self, send_body: bool) -> None:
        """The response, or a short 500 (the traceback logged) rather than a connection closed without one."""
        try:
            self._respond(send_body)
        except (ConnectionError, TimeoutError):
            pass  # the viewer went away, or stopped reading
        except Exception:
            log.exception("error answering %s", self.path)
            self._send(HTTPStatus.INTERNAL_SERVER_ERROR, "text/plain; charset=utf-8", b"internal error (logged)\n",
                       send_body)  # fmt: skip

    def _respond(self, send_body: bool) -> None:
        path = self.path.split("?", 1)[0].split("#", 1)[0]
        server = self.server
        if not host_allowed(self.headers.get("Host"), server.bind_host):
            self._send(HTTPStatus.MISDIRECTED_REQUEST, "text/plain; charset=utf-8", b"unknown host name\n", send_body)
            return
        parts = _NEEDS.get(path, tuple(_PARTS))
        if path in PAGES:
            page = render_page(path, server.status(parts), server.refresh_s)
            self._send(HTTPStatus.OK, "text/html; charset=utf-8", page.encode(), send_body)
        elif path in _API:
            body = json.dumps(_API[path](server.status(parts)), indent=1, default=str) + "\n"
            self._send(HTTPStatus.OK, "application/json", body.encode(), send_body)
        elif path == "/plots/bytes_per_day.png":
            png = server.cache.get(path, lambda: plots.bytes_per_day_png(server.status(parts)["sync"]["bytes_per_day"]))
            self._send(HTTPStatus.OK, "image/png", png, send_body)
        elif path == "/plots/fill_latency.png":
            png = server.cache.get(path, lambda: plots.fill_latency_png(status.fill_history(server.config)))
            self._send(HTTPStatus.OK, "image/png", png, send_body)
        elif match := _QUICKLOOK.match(path):
            self._send_quicklook(match[1], int(match[2]), send_body)
        else:
            self._send(HTTPStatus.NOT_FOUND, "text/plain; charset=utf-8", b"not found\n", send_body)

    def _send_quicklook(self, project: str, scan: int, send_body: bool) -> None:
        try:
            if self.server.filler_root is None:
                raise FileNotFoundError("no [filler] table in the config")
            png = quicklook_path(self.server.filler_root, project, scan).read_bytes()
        except OSError:
            self._send(HTTPStatus.NOT_FOUND, "text/plain; charset=utf-8", b"no quick look for that scan\n", send_body)
            return
        self._send(HTTPStatus.OK, "image/png", png, send_body)

    def _send(self, code: HTTPStatus, content_type: str, body: bytes, send_body: bool, allow: str = "") -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", _CSP)
        self.send_header("Referrer-Policy", "no-referrer")
        if allow:
            self.send_header("Allow", allow)
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's signature)
        log.info("%s %s", self.address_string(), format % args)
