"""A TCP listener for network scanners and handhelds, one scan per line."""

from gateway.readers.tcp.listener import TcpScannerDriver

__all__ = ["TcpScannerDriver"]
