"""The daemon: the only place that wires readers, pipeline, buffer and sync together."""

from gateway.daemon.lifecycle import Daemon
from gateway.daemon.views import DaemonView

__all__ = ["Daemon", "DaemonView"]
