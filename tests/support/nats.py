"""Real NATS servers with JetStream and the MQTT 3.1.1 listener: one node, or a cluster of three."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Self

from gateway.runtime.loopback import free_port, wait_for_port


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
        self.route_port = route_port
        self.conf = workdir / "nats.conf"
        self.log = workdir / "nats.log"
        lines = [
            # MQTT needs JetStream, and JetStream in a cluster needs a server name.
            f"server_name: {name}",
            f"listen: 127.0.0.1:{self.client_port}",
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

    def kill(self) -> None:
        """SIGKILL: the node is gone without a goodbye, as a crashed host would be."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def stop(self) -> None:
        """SIGTERM and wait (kill after 10 s)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
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

    def stop(self) -> None:
        """Stop every node."""
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
