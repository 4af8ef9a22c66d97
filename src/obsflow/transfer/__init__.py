"""The two-hop sync: transports, planning the window, running hops, the catalog."""
