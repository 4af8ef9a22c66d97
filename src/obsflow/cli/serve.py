"""``obsflow serve``: the read-only status page (sync, verification, filler) on a local port."""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path

import click

from obsflow.cli._options import config_option
from obsflow.config import load_config

__all__ = ["command"]

log = logging.getLogger(__name__)

EPILOG = """\b
Examples:
  obsflow serve                                 http://127.0.0.1:8080/ (or [web] host/port)
  obsflow serve --port 8090 --refresh 60
  ssh -L 8080:localhost:8080 archive-host       then open http://localhost:8080/ here
\b
Pages: / /sync /verify /filler; JSON beside each: /api/status.json /api/sync.json
/api/verify.json /api/filler.json.  Read-only; shows no config secrets.
"""


def _is_loopback(address: str) -> bool:
    """Whether a bound address (numeric: "127.1" and "localhost" are bound as 127.0.0.1) is loopback only."""
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


@click.command("serve", epilog=EPILOG)
@config_option
@click.option("--host", default=None, help="Address to listen on (default: [web] host, 127.0.0.1).")
@click.option("--port", type=click.IntRange(0, 65535), default=None, help="Port (default: [web] port, 8080).")
@click.option("--refresh", "refresh_s", type=click.IntRange(min=2), default=30, show_default=True,
              help="Seconds between page refreshes.")  # fmt: skip
def command(config_path: Path, host: str | None, port: int | None, refresh_s: int) -> int:
    """Serve a status page that refreshes itself: last sync per hop and instrument, files per archive,
    the last verification, and the online filler's projects, lag, fills and errors.

    Listens on loopback unless told otherwise; reach it from elsewhere through an ssh tunnel.
    """
    from obsflow.web.server import make_server  # matplotlib and astropy: only when serving

    config = load_config(config_path)
    host = config.web_host if host is None else host
    server = make_server(config, host, config.web_port if port is None else port, refresh_s=refresh_s)
    if not _is_loopback(str(server.server_address[0])):
        click.echo(f"obsflow: warning: listening on {host}, not loopback: anyone who can reach it sees the page",
                   err=True)  # fmt: skip
    click.echo(f"obsflow: status page at {server.url} (Ctrl-C stops)", err=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
