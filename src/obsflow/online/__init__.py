"""The online filler: raw scan data and its conversion to SDFITS rows, scan-event sources, state engine, daemon, journal."""
