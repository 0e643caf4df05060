"""A mosquitto with a TLS listener, a password file and an ACL, and the certificates it needs.

Certificates come from the `openssl` command line (Python's ssl cannot make them; scripts/test
installs openssl when it is missing), the password file from `mosquitto_passwd -b` (Debian's
mosquitto package ships it). Everything lives in the test's own folder and is valid for two days.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from tests.support.broker import Mosquitto
from tests.support.wms import Collector

GATEWAY_USER = "gw"
ADMIN_USER = "wms"
SITE_BASE = "returns/milan-returns"
DOCK = "dock-3"

_OPENSSL_TIMEOUT_S = 30
_EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


@dataclass(frozen=True, slots=True)
class Pki:
    """A test CA, a server and a client certificate it signed, and an unrelated second CA."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca_cert: Path
    other_ca_key: Path


def make_pki(folder: Path) -> Pki:
    """Generate the CA, a server certificate for 127.0.0.1/localhost, a client one, a stray CA."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("openssl not found; scripts/test installs it")
    folder.mkdir(parents=True, exist_ok=True)
    pki = Pki(
        ca_cert=folder / "ca.crt",
        ca_key=folder / "ca.key",
        server_cert=folder / "server.crt",
        server_key=folder / "server.key",
        client_cert=folder / "client.crt",
        client_key=folder / "client.key",
        other_ca_cert=folder / "other-ca.crt",
        other_ca_key=folder / "other-ca.key",
    )
    _self_signed_ca(openssl, pki.ca_cert, pki.ca_key, "dock-gateway test CA")
    _self_signed_ca(openssl, pki.other_ca_cert, pki.other_ca_key, "unrelated test CA")
    _signed(
        openssl,
        pki,
        pki.server_cert,
        pki.server_key,
        common_name="localhost",
        extensions=[
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "extendedKeyUsage=serverAuth",
        ],
    )
    _signed(
        openssl,
        pki,
        pki.client_cert,
        pki.client_key,
        common_name=GATEWAY_USER,
        extensions=["extendedKeyUsage=clientAuth"],
    )
    return pki


def gateway_acl(dock: str = DOCK, site_base: str = SITE_BASE) -> str:
    """The ACL: `gw` writes only under its own dock and reads its ack, cmd and scans topics."""
    base = f"{site_base}/{dock}"
    return "\n".join(
        [
            f"user {GATEWAY_USER}",
            f"topic write {base}/#",
            f"topic read {base}/ack",
            f"topic read {base}/cmd/#",
            f"topic read {base}/scans/#",
            "",
            f"user {ADMIN_USER}",
            "topic readwrite #",
            "",
        ]
    )


class SecureMosquitto(Mosquitto):
    """mosquitto whose only listener (on `port`) is TLS, with a password file and an ACL.

    Anonymous clients are refused; `users` maps user name to password; `require_certificate`
    makes the listener ask every client for a certificate signed by the test CA.
    """

    def __init__(
        self,
        workdir: Path,
        pki: Pki,
        users: dict[str, str],
        *,
        acl: str | None = None,
        require_certificate: bool = False,
    ) -> None:
        super().__init__(workdir)
        self.pki = pki
        self.users = dict(users)
        self.passwords = self.workdir / "passwd"
        self.acl = self.workdir / "acl"
        self.acl.write_text(gateway_acl() if acl is None else acl, encoding="utf-8")
        _password_file(self.passwords, self.users)
        # Replace the plain listener the base class wrote: this broker speaks TLS only.
        plain = self.conf.read_text(encoding="utf-8").splitlines()
        kept = [
            line
            for line in plain
            if not line.startswith(("listener ", "allow_anonymous ", "log_type "))
        ]
        lines = [
            "per_listener_settings false",
            "allow_anonymous false",
            f"password_file {self.passwords}",
            f"acl_file {self.acl}",
            *kept,
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            f"listener {self.port} 127.0.0.1",
            f"cafile {pki.ca_cert}",
            f"certfile {pki.server_cert}",
            f"keyfile {pki.server_key}",
            f"require_certificate {'true' if require_certificate else 'false'}",
        ]
        self.conf.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def log_text(self) -> str:
        """What mosquitto logged so far (connections, refusals, denials)."""
        if not self.log.exists():
            return ""
        return self.log.read_text(encoding="utf-8", errors="replace")


class TlsCollector(Collector):
    """The test WMS over TLS as a user allowed to read everything (`ADMIN_USER`)."""

    def __init__(
        self, port: int, topics: list[str], *, pki: Pki, username: str, password: str
    ) -> None:
        self.pki = pki
        self.username = username
        self.password = password
        super().__init__(port, topics)

    def _client(self) -> mqtt.Client:
        client = super()._client()
        configure_tls_client(client, self.pki, self.username, self.password)
        return client


def configure_tls_client(
    client: mqtt.Client,
    pki: Pki,
    username: str,
    password: str,
    *,
    with_client_cert: bool = True,
) -> None:
    """Set up a paho client to verify the test CA, log in, and show the client certificate."""
    context = ssl.create_default_context(cafile=str(pki.ca_cert))
    if with_client_cert:
        context.load_cert_chain(str(pki.client_cert), str(pki.client_key))
    client.tls_set_context(context)
    client.username_pw_set(username, password)


def connect_once(
    port: int,
    pki: Pki,
    username: str,
    password: str,
    *,
    with_client_cert: bool = True,
    timeout_s: float = 5.0,
) -> str:
    """Connect one MQTT 5 client over TLS and return the CONNACK reason name (or the error)."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    configure_tls_client(client, pki, username, password, with_client_cert=with_client_cert)
    outcome: list[str] = []

    def on_connect(_c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        outcome.append(str(reason))

    client.on_connect = on_connect
    try:
        client.connect("127.0.0.1", port, keepalive=5)
    except (OSError, ValueError) as exc:
        return f"error: {exc}"
    try:
        for _ in range(int(timeout_s / 0.1)):
            if outcome:
                break
            if client.loop(timeout=0.1) != mqtt.MQTT_ERR_SUCCESS:
                break
    finally:
        client.disconnect()
    return outcome[0] if outcome else "no CONNACK"


def _run(args: list[str]) -> None:
    done = subprocess.run(
        args, capture_output=True, text=True, timeout=_OPENSSL_TIMEOUT_S, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{args[0]} {args[1]} failed: {done.stderr.strip()}")


def _self_signed_ca(openssl: str, cert: Path, key: Path, common_name: str) -> None:
    _run(
        [
            openssl,
            "req",
            "-x509",
            *_EC_KEY,
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "2",
            "-subj",
            f"/CN={common_name}",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]
    )


def _signed(
    openssl: str, pki: Pki, cert: Path, key: Path, *, common_name: str, extensions: list[str]
) -> None:
    request = cert.with_suffix(".csr")
    extfile = cert.with_suffix(".ext")
    extfile.write_text(
        "\n".join(["basicConstraints=CA:FALSE", "keyUsage=digitalSignature", *extensions]) + "\n",
        encoding="utf-8",
    )
    _run(
        [
            openssl,
            "req",
            "-new",
            *_EC_KEY,
            "-keyout",
            str(key),
            "-out",
            str(request),
            "-subj",
            f"/CN={common_name}",
        ]
    )
    _run(
        [
            openssl,
            "x509",
            "-req",
            "-in",
            str(request),
            "-CA",
            str(pki.ca_cert),
            "-CAkey",
            str(pki.ca_key),
            "-CAcreateserial",
            "-out",
            str(cert),
            "-days",
            "2",
            "-extfile",
            str(extfile),
        ]
    )


def _password_file(path: Path, users: dict[str, str]) -> None:
    binary = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    if not Path(binary).exists():
        raise RuntimeError("mosquitto_passwd not found; it comes with Debian's mosquitto package")
    path.write_text("", encoding="utf-8")
    for user, password in users.items():
        _run([binary, "-b", str(path), user, password])
    # mosquitto (as root it stays root with `user root`, else drops to `mosquitto`) must read it.
    path.chmod(0o644)
