"""Runtime plumbing: supervisor and backoff, the thread bridge, systemd notify, health."""
