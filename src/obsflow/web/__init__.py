"""The read-only status page and its plots."""
