"""Verification: list hosts, compare per hop, report (text, JSON, HTML), mail."""
