"""The read-only status page and its plots.

Modules: ``status`` (gathers what to show from the catalog, the last verification and the
filler daemon's status; never writes), ``pages`` (HTML), ``plots`` (PNG), ``server`` (the
stdlib HTTP server and its routes), ``quicklook`` (the per-scan spectrum plot the filler makes).
"""

from obsflow.web.quicklook import Spectrum, quicklook_path, quicklook_png, scan_spectra
from obsflow.web.server import StatusServer, make_server
from obsflow.web.status import fill_history, filler_status, full_status, sync_status, verify_status

__all__ = [
    "Spectrum",
    "StatusServer",
    "fill_history",
    "filler_status",
    "full_status",
    "make_server",
    "quicklook_path",
    "quicklook_png",
    "scan_spectra",
    "sync_status",
    "verify_status",
]
