"""Verification: list both sides of every hop, compare, report (text, JSON, HTML), mail.

Modules: ``period`` (which nights), ``compare`` (pure: listings -> findings), ``check``
(runs the listings and hashing per hop and instrument), ``findings`` (the Report value),
``report`` (renderers), ``mail`` (SMTP), ``last`` (latest result for the status page).
"""

from obsflow.verify.check import Pair, Side, plan_pairs, verify
from obsflow.verify.compare import Comparison, HashDiff, SizeDiff, compare_hashes, compare_listings, confirm
from obsflow.verify.findings import FolderResult, Report
from obsflow.verify.last import load_last, save_last
from obsflow.verify.mail import build_message, send_message, should_send
from obsflow.verify.period import Period, months_period, range_period
from obsflow.verify.report import render_html, render_json, render_text, report_dict

__all__ = [
    "Comparison",
    "FolderResult",
    "HashDiff",
    "Pair",
    "Period",
    "Report",
    "Side",
    "SizeDiff",
    "build_message",
    "compare_hashes",
    "compare_listings",
    "confirm",
    "load_last",
    "months_period",
    "plan_pairs",
    "range_period",
    "render_html",
    "render_json",
    "render_text",
    "report_dict",
    "save_last",
    "send_message",
    "should_send",
    "verify",
]
