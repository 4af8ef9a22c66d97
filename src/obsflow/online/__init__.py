"""The online filler: raw scan data, scan-event sources, state engine, daemon, journal."""
