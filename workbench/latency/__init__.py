"""Per-stage latency accounting: stage names, HDR recorders, spike log."""
