"""Dock gateway: returns-dock RFID and barcode events to a WMS over MQTT, buffered in SQLite."""

__version__ = "0.1.0"
