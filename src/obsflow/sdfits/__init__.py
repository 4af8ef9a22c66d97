"""SDFITS products: the writer (append in O(scan)), GBTIDL index and flag files, the online status file.

The format only: what goes into the rows of a raw scan is computed in :mod:`obsflow.online.rows`.
"""
