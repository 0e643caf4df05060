"""The broker link: topics, ack parsing, the paho adapter and the outbox forwarder."""
