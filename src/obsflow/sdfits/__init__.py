"""SDFITS products: the writer (append in O(scan)), GBTIDL index and flag files, the online status file."""
