"""MQTT topic names for one gateway, and the parsers for the topics it subscribes to."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Topics:
    """The topics of `{prefix}/{site}/{gateway}` as DESIGN.md lists them."""

    prefix: str
    site: str
    gateway: str

    @property
    def base(self) -> str:
        """`{prefix}/{site}/{gateway}`."""
        return f"{self.prefix}/{self.site}/{self.gateway}"

    @property
    def movements(self) -> str:
        """Outgoing movements, QoS 1."""
        return f"{self.base}/movements"

    @property
    def status(self) -> str:
        """Retained online/offline status (the Last Will goes here)."""
        return f"{self.base}/status"

    @property
    def kpi(self) -> str:
        """Retained KPI snapshot."""
        return f"{self.base}/kpi"

    @property
    def ack(self) -> str:
        """Incoming acks from the WMS."""
        return f"{self.base}/ack"

    @property
    def events(self) -> str:
        """Gateway events (profile changes, alerts), QoS 1, not retained."""
        return f"{self.base}/events"

    def feedback(self, station: str) -> str:
        """The verdict shown at `station` (expected / unexpected / problem), QoS 0."""
        return f"{self.base}/feedback/{station}"

    @property
    def site_expected_returns(self) -> str:
        """Site-wide announcements of expected returns: one publish reaches every door."""
        return f"{self.prefix}/{self.site}/expected-returns"

    def cmd(self, name: str) -> str:
        """The topic a command `name` arrives on."""
        return f"{self.base}/cmd/{name}"

    def cmd_result(self, name: str) -> str:
        """The topic the result of command `name` is published on."""
        return f"{self.base}/cmd-result/{name}"

    @property
    def cmd_filter(self) -> str:
        """Subscription filter for every command."""
        return f"{self.base}/cmd/+"

    @property
    def scans_filter(self) -> str:
        """Subscription filter for handheld scans sent over MQTT (`scans/{device}`)."""
        return f"{self.base}/scans/+"

    def command_name(self, topic: str) -> str | None:
        """The command name of a `cmd/{name}` topic of this gateway, else None."""
        return _last_level(topic, f"{self.base}/cmd/")

    def scan_device(self, topic: str) -> str | None:
        """The device of a `scans/{device}` topic of this gateway, else None."""
        return _last_level(topic, f"{self.base}/scans/")


def _last_level(topic: str, head: str) -> str | None:
    if not topic.startswith(head):
        return None
    rest = topic[len(head) :]
    if not rest or "/" in rest or "+" in rest or "#" in rest:
        return None
    return rest
