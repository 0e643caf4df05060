"""The technicians' console: one web page on the gateway's HTTP port for every reader behind it."""
