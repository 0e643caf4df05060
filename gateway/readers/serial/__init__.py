"""Serial scanners (USB CDC-ACM, RS-232, Bluetooth SPP) by path or pyserial URL."""

from gateway.readers.serial.driver import SerialScannerDriver

__all__ = ["SerialScannerDriver"]
