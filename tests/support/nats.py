"""Real NATS servers with JetStream and the MQTT 3.1.1 listener: one node, or a cluster of three."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Self

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from gateway.runtime.loopback import free_port, wait_for_port
from gateway.runtime.processes import end_process


def nats_binary() -> str | None:
    """Debian's `nats-server`, or None when it is not installed."""
    found = shutil.which("nats-server")
    if found is not None:
        return found
    return "/usr/sbin/nats-server" if Path("/usr/sbin/nats-server").exists() else None


class NatsNode:
    """One nats-server with JetStream (its own store dir) and an MQTT listener on free ports."""

    def __init__(
        self,
        workdir: Path,
        name: str,
        *,
        routes: list[int] | None = None,
        route_port: int | None = None,
        replicas: int = 1,
    ) -> None:
        binary = nats_binary()
        if binary is None:
            raise RuntimeError("nats-server not found; scripts/test installs it")
        self.binary = binary
        self.name = name
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.client_port = free_port()
        self.mqtt_port = free_port()
        self.http_port = free_port()
        self.route_port = route_port
        self.conf = workdir / "nats.conf"
        self.log = workdir / "nats.log"
        lines = [
            # MQTT needs JetStream, and JetStream in a cluster needs a server name.
            f"server_name: {name}",
            f"listen: 127.0.0.1:{self.client_port}",
            f"http: 127.0.0.1:{self.http_port}",
            f'jetstream {{ store_dir: "{workdir / "js"}" }}',
            f"mqtt {{ listen: 127.0.0.1:{self.mqtt_port}, stream_replicas: {replicas} }}",
        ]
        if route_port is not None:
            peers = ", ".join(f"nats-route://127.0.0.1:{p}" for p in routes or [])
            lines.append(
                f"cluster {{ name: dock, listen: 127.0.0.1:{route_port}, routes: [{peers}] }}"
            )
        self.conf.write_text("\n".join(lines) + "\n", encoding="utf-8")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def server(self) -> str:
        """The MQTT endpoint as `[mqtt] servers` names it."""
        return f"127.0.0.1:{self.mqtt_port}"

    def start(self) -> None:
        """Start the node; `wait_ready` waits for its MQTT listener."""
        if self.running:
            return
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [self.binary, "-c", str(self.conf)], stdout=log, stderr=log
            )

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Block until the MQTT listener accepts connections."""
        wait_for_port(self.mqtt_port, timeout_s)

    def healthy(self) -> bool:
        """NATS's own `/healthz`: JetStream up and every stream and consumer on it current."""
        url = f"http://127.0.0.1:{self.http_port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def wait_healthy(self, timeout_s: float = 60.0) -> None:
        """Block until `/healthz` says ok: a restarted node has caught up with its raft groups."""
        deadline = time.monotonic() + timeout_s
        while not self.healthy():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} not healthy after {timeout_s}s")
            time.sleep(0.5)

    def wait_round_trip(self, timeout_s: float = 60.0) -> None:
        """Block until a persistent 3.1.1 session gets its own QoS 1 message back.

        A fresh JetStream cluster takes seconds to elect the leaders of the MQTT streams; until
        then NATS turns sessions away, which would make a test measure the warm-up, not the link.
        """
        deadline = time.monotonic() + timeout_s
        while not _round_trip(self.mqtt_port, 5.0):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no MQTT round trip through {self.name} in {timeout_s}s")
            time.sleep(0.5)

    def kill(self) -> None:
        """SIGKILL: the node is gone without a goodbye, as a crashed host would be."""
        if self.proc is not None:
            end_process(self.proc, kill=True)
        self.proc = None

    def stop(self) -> None:
        """SIGTERM and wait (kill after 10 s)."""
        if self.proc is not None:
            end_process(self.proc)
        self.proc = None

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> Self:
        self.start()
        self.wait_ready()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class NatsCluster:
    """Three routed NATS nodes; MQTT sessions and messages kept in JetStream with 3 replicas."""

    def __init__(self, workdir: Path, size: int = 3) -> None:
        route_ports = [free_port() for _ in range(size)]
        self.nodes = [
            NatsNode(
                workdir / f"n{index + 1}",
                f"n{index + 1}",
                route_port=port,
                routes=[p for p in route_ports if p != port],
                replicas=size,
            )
            for index, port in enumerate(route_ports)
        ]

    @property
    def servers(self) -> list[str]:
        """Every node's MQTT endpoint, for `[mqtt] servers`."""
        return [node.server for node in self.nodes]

    def node_on(self, mqtt_port: int) -> NatsNode:
        """The node whose MQTT listener is on this port."""
        return next(node for node in self.nodes if node.mqtt_port == mqtt_port)

    def start(self, timeout_s: float = 60.0) -> None:
        """Start all nodes and wait until each one takes MQTT clients."""
        for node in self.nodes:
            node.start()
        deadline = time.monotonic() + timeout_s
        for node in self.nodes:
            node.wait_ready(max(1.0, deadline - time.monotonic()))
        for node in self.nodes:
            node.wait_round_trip(max(1.0, deadline - time.monotonic()))

    def stop(self) -> None:
        """Stop every node."""
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _round_trip(port: int, timeout_s: float) -> bool:
    """Whether a persistent 3.1.1 session subscribes and gets a QoS 1 message back in time."""
    done = threading.Event()
    topic = f"probe/{uuid.uuid4().hex[:8]}"
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"probe-{uuid.uuid4().hex[:8]}",
        protocol=mqtt.MQTTv311,
        clean_session=False,
    )

    def on_connect(c: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if not rc.is_failure:
            c.subscribe(topic, 1)

    client.on_connect = on_connect
    client.on_subscribe = lambda c, *_a: c.publish(topic, b"x", qos=1)
    client.on_message = lambda *_a: done.set()
    try:
        client.connect("127.0.0.1", port, keepalive=30)
    except OSError:
        return False
    client.loop_start()
    try:
        return done.wait(timeout_s)
    finally:
        client.disconnect()
        client.loop_stop()
