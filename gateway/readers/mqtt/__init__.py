"""Handhelds that publish their scans over MQTT, taken from the lane the broker link fills."""

from gateway.readers.mqtt.driver import Deliveries, MqttScannerDriver, delivery_digest

__all__ = ["Deliveries", "MqttScannerDriver", "delivery_digest"]
