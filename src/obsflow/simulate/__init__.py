"""Simulated telescope and instruments that write realistic raw data (demo and tests)."""
