"""The only module that imports paho: one MQTT 5 or 3.1.1 connection driven from the asyncio loop.

paho runs without a thread of its own (aiomqtt style): its socket is watched with
`loop.add_reader`/`add_writer`, a timer calls `loop_misc` for keepalive, and only the blocking TCP
and TLS connect runs in the loop's default executor. paho never retries or re-sends on its own: each
`MqttLink` is one connection with a fresh paho client (`reconnect_on_failure=False`), its queue of
outgoing messages is dropped at connect, and a lost link is reported once as `Disconnected`; the
caller makes a new link to reconnect.

MQTT 3.1.1 has no properties: no reason code on PUBACK (a broker that refuses a publish closes
the connection), no Receive Maximum, no response topic, and no session expiry (the session is
persistent by client id: clean session off unless `session_expiry_s` is 0).

Incoming QoS 1 messages are acknowledged by the caller (`ack`), never by paho on arrival: the
PUBACK says the gateway keeps the message, so it goes only once the message is journaled or
applied. MQTT 5 bounds how many the broker sends unacknowledged with the Receive Maximum sent on
CONNECT; a 3.1.1 broker applies its own in-flight limit (mosquitto `max_inflight_messages`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import ssl
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from gateway.errors import BrokerRefused, BrokerUnavailable
from gateway.logs import get_logger
from gateway.sync.paho_client import LinkClient
from gateway.sync.read_gate import ReadGate
from gateway.sync.settings import LinkSettings, TlsSettings

_log = get_logger("mqtt")

DEFAULT_RECEIVE_MAXIMUM = 65535
MISC_INTERVAL_S = 1.0

# CONNACK reasons that retrying with the same settings will not fix (MQTT 5, 3.2.2.2).
_REFUSED_REASONS = frozenset({0x84, 0x85, 0x86, 0x87, 0x8A, 0x8C})
# What paho reports when an MQTT 5 CONNECT gets a 3.1.1 CONNACK "unacceptable protocol version".
UNSUPPORTED_PROTOCOL = 0x84
_link_numbers = itertools.count(1)


@dataclass(frozen=True, slots=True)
class PublishProperties:
    """The MQTT 5 publish properties the gateway uses (request/response, user properties)."""

    response_topic: str | None = None
    correlation_data: bytes | None = None
    user_properties: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Published:
    """The broker answered a QoS 1 publish; `ok` is False for a failure reason (>= 0x80)."""

    mid: int
    reason_code: int
    ok: bool


@dataclass(frozen=True, slots=True)
class Message:
    """A message from a subscription, with its MQTT 5 request/response properties.

    `link` numbers the connection it came on: its PUBACK (`MqttLink.ack`) may go only there.
    """

    topic: str
    payload: bytes
    mid: int = 0
    qos: int = 0
    dup: bool = False
    link: int = 0
    response_topic: str | None = None
    correlation_data: bytes | None = None
    user_properties: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Disconnected:
    """The link is gone (lost, closed by the broker, aborted or disconnected); reported once."""

    reason: str


LinkEvent = Published | Message | Disconnected


class MqttLink:
    """One MQTT 5 connection; events go to `on_event`, called on the event loop, never raising."""

    def __init__(self, settings: LinkSettings, on_event: Callable[[LinkEvent], None]) -> None:
        self.settings = settings
        self.number = next(_link_numbers)
        self.receive_maximum = DEFAULT_RECEIVE_MAXIMUM
        self.session_present = False
        self._on_event = on_event
        self._client: LinkClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._fd = -1
        self._watching_write = False
        self._misc: asyncio.TimerHandle | None = None
        self._connack: asyncio.Future[tuple[ReasonCode, Properties | None]] | None = None
        self._subscriptions: dict[int, asyncio.Future[list[int]]] = {}
        self._connected = False
        self._gone = False
        self._closed = asyncio.Event()
        self._gate = ReadGate(settings.receive_maximum)
        self._paho_errors = _LastError()

    @property
    def connected(self) -> bool:
        """Whether CONNACK accepted us and the link has not been lost since."""
        return self._connected

    async def connect(self) -> None:
        """Connect, await CONNACK; raise BrokerRefused (auth, TLS trust) or BrokerUnavailable."""
        if self._client is not None:
            raise RuntimeError("an MqttLink connects once; make a new one to reconnect")
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self._connack = loop.create_future()
        settings = self.settings
        client = self._client = _new_client(settings, self._paho_errors.logger)
        client.on_connect = self._paho_connect
        client.on_disconnect = self._paho_disconnect
        on_event = self._on_event
        client.on_publish = lambda _c, _u, mid, reason, _p: on_event(
            Published(mid, reason.value, reason.value < 0x80)
        )
        client.on_row_ack = lambda mid, reason: on_event(Published(mid, reason, reason < 0x80))
        client.on_message = self._paho_message
        client.on_subscribe = self._paho_subscribe
        client.on_socket_open = self._paho_socket_open
        client.on_socket_close = lambda *_: self._on_loop(self._unwatch)
        client.on_socket_register_write = self._paho_register_write
        client.on_socket_unregister_write = self._paho_unregister_write
        pending = loop.run_in_executor(None, _blocking_connect, client, settings)
        try:
            async with asyncio.timeout(settings.connect_timeout_s):
                await asyncio.shield(pending)
                reason, properties = await self._connack
        except BaseException as exc:
            # The executor thread may still be connecting: close whatever it opens when it is done.
            pending.add_done_callback(lambda _: self._close_socket())
            self._close_socket()
            if isinstance(exc, TimeoutError):
                raise BrokerUnavailable(
                    f"no CONNACK from {settings.host}:{settings.port} "
                    f"within {settings.connect_timeout_s} s"
                ) from exc
            raise
        if reason.is_failure:
            self._close_socket()
            text = f"broker refused the connection: {reason.getName()} (0x{reason.value:02x})"
            if reason.value == UNSUPPORTED_PROTOCOL and settings.protocol == "5":
                # NATS, RabbitMQ before 3.13, Azure IoT Hub: MQTT 3.1.1 only.
                _log.error(
                    "broker_protocol_unsupported",
                    server=settings.server,
                    protocol=settings.protocol,
                    advice='the broker speaks MQTT 3.1.1 only: set [mqtt] protocol = "3.1.1"',
                )
                text += '; set [mqtt] protocol = "3.1.1"'
            if reason.value in _REFUSED_REASONS:
                raise BrokerRefused(text)
            raise BrokerUnavailable(text)
        if properties is not None:
            self.receive_maximum = int(
                getattr(properties, "ReceiveMaximum", DEFAULT_RECEIVE_MAXIMUM)
            )
        # A fresh client has nothing queued; dropping anyway guarantees paho never re-sends alone.
        client.drop_out_messages()
        self._connected = True

    def publish(
        self,
        topic: str,
        payload: bytes,
        qos: int = 1,
        retain: bool = False,
        properties: PublishProperties | None = None,
    ) -> int:
        """Queue a publish and return its mid; raise BrokerUnavailable when not connected."""
        client = self._client
        if client is None or not self._connected:
            raise BrokerUnavailable("not connected")
        if properties is None or self.settings.protocol != "5":
            info = client.publish(topic, payload, qos, retain)
        else:
            info = client.publish(topic, payload, qos, retain, _properties(properties))
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise BrokerUnavailable(f"publish failed: {paho.error_string(info.rc)}")
        return int(info.mid)

    def publish_row(self, topic: str, payload: bytes) -> int:
        """Queue a row's QoS 1 publish in the batch `flush` writes; return its mid.

        Its answer comes as a `Published` event like any other, reason code included.
        """
        client = self._client
        if client is None or not self._connected:
            raise BrokerUnavailable("not connected")
        return client.publish_row(topic, payload)

    def flush(self) -> None:
        """Write what was queued now, not on the loop's next turn (fewer round trips)."""
        client = self._client
        if client is None:
            return
        client.queue_rows()
        if not client.want_write():
            return
        try:
            client.loop_write()
        except OSError as exc:
            self.abort(f"write failed: {exc}")

    def ack(self, message: Message) -> bool:
        """PUBACK a QoS 1 message that came on this link; False (nothing sent) if it cannot be.

        A message of an earlier link, or one that arrives while this link is down, is not acked:
        the broker sends it again, with DUP set, on the next connection of the session.
        """
        client = self._client
        if message.qos == 0:
            return True
        # Not `connected`: messages may come with the CONNACK, before connect() has returned.
        if message.link != self.number or client is None or self._gone or client.socket() is None:
            return False
        if client.ack(message.mid, message.qos) != MQTTErrorCode.MQTT_ERR_SUCCESS:
            return False
        self._gate.gave(len(message.payload))
        return True

    async def subscribe(self, filters: Sequence[str], qos: int = 1) -> list[int]:
        """Subscribe and wait for SUBACK; return one reason code per filter (>= 0x80 refused)."""
        client = self._client
        if client is None or not self._connected or self._loop is None:
            raise BrokerUnavailable("not connected")
        result, mid = client.subscribe([(topic, qos) for topic in filters])
        if result != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            raise BrokerUnavailable(f"subscribe failed: {paho.error_string(result)}")
        waiter: asyncio.Future[list[int]] = self._loop.create_future()
        self._subscriptions[mid] = waiter
        try:
            async with asyncio.timeout(self.settings.connect_timeout_s):
                return await waiter
        except TimeoutError as exc:
            raise BrokerUnavailable("no SUBACK") from exc
        finally:
            self._subscriptions.pop(mid, None)

    async def disconnect(self, timeout_s: float = 1.0) -> None:
        """Send DISCONNECT (the broker drops the Will) and close; abort after `timeout_s`."""
        client = self._client
        if client is None or client.socket() is None:
            self._close_socket()
            return
        client.disconnect()
        try:
            async with asyncio.timeout(timeout_s):
                await self._closed.wait()
        except TimeoutError:
            self.abort("disconnect timed out")

    def abort(self, reason: str = "aborted") -> None:
        """Close the socket without DISCONNECT (the broker publishes the Will); report it."""
        self._close_socket()
        self._lost(reason)

    # -- paho set-up -------------------------------------------------------------------------

    # -- socket plumbing (paho calls these on the loop, or from the executor during connect) --

    def _on_loop(self, func: Callable[[], object]) -> None:
        loop = self._loop
        if loop is None:
            return
        if threading.get_ident() == self._loop_thread:
            func()
        else:
            with contextlib.suppress(RuntimeError):  # the loop closed while connecting
                loop.call_soon_threadsafe(func)

    def _paho_socket_open(self, client: paho.Client, _userdata: Any, sock: Any) -> None:
        fd = int(sock.fileno())

        def watch() -> None:
            if self._loop is None or client.socket() is not sock or self._gone:
                return
            self._fd = fd
            self._gate.attach(self._loop, self._fd, self._readable)
            self._misc = self._loop.call_later(MISC_INTERVAL_S, self._misc_tick)

        self._on_loop(watch)

    def _paho_register_write(self, client: paho.Client, _userdata: Any, sock: Any) -> None:
        # Looked at one turn later: the forwarder writes what it queues at once (`flush`), and
        # then nothing is left to watch. Watching at once cost two epoll_ctl calls per batch.
        loop = self._loop
        if loop is not None:
            self._on_loop(functools.partial(loop.call_soon, self._watch_write, client, sock))

    def _watch_write(self, client: paho.Client, sock: Any) -> None:
        if self._watching_write or self._loop is None or self._fd < 0:
            return
        if client.socket() is sock and client.want_write():
            self._watching_write = True
            self._loop.add_writer(self._fd, self._writable)

    def _paho_unregister_write(self, _client: paho.Client, _userdata: Any, _sock: Any) -> None:
        def done_writing() -> None:
            if self._watching_write and self._loop is not None and self._fd >= 0:
                self._loop.remove_writer(self._fd)
            self._watching_write = False

        self._on_loop(done_writing)

    def _unwatch(self) -> None:
        if self._loop is not None and self._fd >= 0:
            self._loop.remove_reader(self._fd)
            self._loop.remove_writer(self._fd)
        self._gate.detach()
        self._fd = -1
        self._watching_write = False
        if self._misc is not None:
            self._misc.cancel()
            self._misc = None

    def _readable(self) -> None:
        client = self._client
        if client is None:
            return
        try:
            client.loop_read()
            sock = client.socket()
            # Bytes read but not yet parsed (our chunk, TLS's decrypted record) are never reported
            # by the selector again: parse them now.
            # paho parses at most one packet a call for each message it has in flight, and the
            # rows are not among them: go on while bytes wait (every call consumes some).
            tls_sock = sock if isinstance(sock, ssl.SSLSocket) else None
            while sock is not None and client.socket() is sock and not self._gate.paused:
                if not client.buffered() and (tls_sock is None or not tls_sock.pending()):
                    break
                client.loop_read()
        except OSError as exc:
            self.abort(f"read failed: {exc}")
        except Exception as exc:  # noqa: BLE001 - containment boundary: paho's read path runs our callbacks; a bug there must drop the link, not wedge it
            _log.exception("mqtt_read_failed", error=repr(exc))
            self.abort(f"read failed: {exc!r}")

    def _writable(self) -> None:
        client = self._client
        if client is None:
            return
        try:
            client.loop_write()
        except OSError as exc:
            self.abort(f"write failed: {exc}")

    def _misc_tick(self) -> None:
        client = self._client
        self._misc = None
        if client is None or client.socket() is None or self._loop is None:
            return
        client.loop_misc()
        if client.socket() is not None and self._fd >= 0:
            self._misc = self._loop.call_later(MISC_INTERVAL_S, self._misc_tick)

    def _close_socket(self) -> None:
        """Close paho's socket (paho has no public abort); safe from any thread, idempotent."""
        client = self._client
        if client is None:
            return
        if threading.get_ident() == self._loop_thread:
            self._unwatch()
        client._sock_close()  # noqa: SLF001 - the only way to drop the socket without DISCONNECT
        self._closed.set()

    def _lost(self, reason: str) -> None:
        was_connected = self._connected
        self._connected = False
        self._closed.set()
        connack = self._connack
        if connack is not None and not connack.done():
            connack.set_exception(BrokerUnavailable(f"connection closed before CONNACK: {reason}"))
            # connect() may already have given up on it (timeout, refused): do not warn then.
            connack.add_done_callback(_retrieve)
        for waiter in self._subscriptions.values():
            if not waiter.done():
                waiter.set_exception(BrokerUnavailable(f"connection lost: {reason}"))
                waiter.add_done_callback(_retrieve)
        if was_connected and not self._gone:
            self._gone = True
            self._on_event(Disconnected(reason))
        self._gone = True

    # -- paho callbacks (on the loop thread) ---------------------------------------------------

    def _paho_connect(
        self,
        _client: paho.Client,
        _userdata: Any,
        _flags: Any,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self.session_present = bool(getattr(_flags, "session_present", False))
        connack = self._connack
        if connack is not None and not connack.done():
            connack.set_result((reason, properties))

    def _paho_disconnect(
        self,
        _client: paho.Client,
        _userdata: Any,
        flags: Any,
        reason: ReasonCode,
        _properties: Any,
    ) -> None:
        text = reason.getName() if isinstance(reason, ReasonCode) else str(reason)
        detail = self._paho_errors.text
        if detail is not None and not getattr(flags, "is_disconnect_packet_from_server", False):
            # paho reports a failed read (a TLS alert, a reset) only as "Unspecified error".
            text = f"{text}: {detail}"
        self._on_loop(lambda: self._lost(text))

    def _paho_message(self, _client: paho.Client, _userdata: Any, msg: paho.MQTTMessage) -> None:
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            # The broker validates UTF-8; nothing of ours can match such a topic: let it go.
            if msg.qos > 0:
                _client.ack(msg.mid, msg.qos)
            return
        props = msg.properties
        response_topic = getattr(props, "ResponseTopic", None)
        correlation = getattr(props, "CorrelationData", None)
        user = getattr(props, "UserProperty", None) or []
        if msg.qos > 0:
            self._gate.took(len(msg.payload))
        self._on_event(
            Message(
                topic=topic,
                payload=bytes(msg.payload),
                mid=int(msg.mid),
                qos=int(msg.qos),
                dup=bool(msg.dup),
                link=self.number,
                response_topic=response_topic if isinstance(response_topic, str) else None,
                correlation_data=bytes(correlation) if correlation is not None else None,
                user_properties=tuple((str(k), str(v)) for k, v in user),
            )
        )

    def _paho_subscribe(
        self,
        _client: paho.Client,
        _userdata: Any,
        mid: int,
        reasons: list[ReasonCode],
        _properties: Any,
    ) -> None:
        waiter = self._subscriptions.get(mid)
        if waiter is not None and not waiter.done():
            waiter.set_result([int(r.value) for r in reasons])


class _LastError(logging.Handler):
    """Keeps paho's last ERROR line; a private logger, so DEBUG lines are never even formatted."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.text: str | None = None
        # Unregistered on purpose: getLogger would keep one logger per link forever.
        self.logger = logging.Logger("gateway.sync.paho", logging.ERROR)  # noqa: LOG001 - see above
        self.logger.propagate = False
        self.logger.addHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        """Remember the message (paho's ERROR lines name sockets and TLS alerts, never secrets)."""
        self.text = record.getMessage()[:300]


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a future's exception as seen; whoever still awaits it gets it all the same."""
    if not future.cancelled():
        future.exception()


def _properties(props: PublishProperties) -> Properties:
    out = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    if props.response_topic is not None:
        out.ResponseTopic = props.response_topic
    if props.correlation_data is not None:
        out.CorrelationData = props.correlation_data
    if props.user_properties:
        out.UserProperty = list(props.user_properties)
    return out


def _new_client(settings: LinkSettings, paho_logger: logging.Logger) -> LinkClient:
    """A paho client for these settings that never retries, queues or re-sends on its own."""
    v311 = settings.protocol == "3.1.1"
    client = LinkClient(
        CallbackAPIVersion.VERSION2,
        client_id=settings.client_id,
        protocol=paho.MQTTv311 if v311 else paho.MQTTv5,
        # 3.1.1 has no session expiry: a persistent session is kept by client id.
        clean_session=(settings.session_expiry_s == 0) if v311 else None,
        reconnect_on_failure=False,
        # A PUBACK promises the message is kept: `MqttLink.ack` sends it once it is.
        manual_ack=True,
    )
    # Our window caps what is in flight; 0 stops paho from queueing or scanning its own list.
    client.max_inflight_messages_set(0)
    client.max_queued_messages_set(0)
    client.connect_timeout = settings.connect_timeout_s
    if settings.username is not None:
        client.username_pw_set(settings.username, settings.password)
    if settings.tls is not None:
        try:
            context = _ssl_context(settings.tls)
        except OSError as exc:  # ssl.SSLError is an OSError
            raise BrokerRefused(f"TLS files unusable: {exc}") from exc
        client.tls_set_context(context)
        if settings.tls.insecure_skip_verify:
            client.tls_insecure_set(True)
    if settings.will is not None:
        will = settings.will
        client.will_set(will.topic, will.payload, will.qos, will.retain)
    client.enable_logger(paho_logger)
    return client


def _blocking_connect(client: paho.Client, settings: LinkSettings) -> None:
    """Runs in the executor: TCP connect, TLS handshake and CONNECT queued."""
    try:
        if settings.protocol == "3.1.1":
            client.connect(settings.host, settings.port, keepalive=settings.keepalive_s)
        else:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = settings.session_expiry_s
            properties.MaximumPacketSize = settings.max_packet_bytes
            # What the broker may send before our PUBACKs: bounds what the daemon holds.
            properties.ReceiveMaximum = settings.receive_maximum
            client.connect(
                settings.host,
                settings.port,
                keepalive=settings.keepalive_s,
                clean_start=False,
                properties=properties,
            )
    except ssl.SSLCertVerificationError as exc:
        raise BrokerRefused(f"TLS verification failed: {exc.verify_message}") from exc
    except ssl.SSLError as exc:
        raise BrokerUnavailable(f"TLS handshake failed: {exc.reason}") from exc
    except (OSError, ValueError) as exc:
        raise BrokerUnavailable(
            f"cannot connect to {settings.host}:{settings.port}: {exc}"
        ) from exc


def _ssl_context(tls: TlsSettings) -> ssl.SSLContext:
    context = ssl.create_default_context(
        cafile=str(tls.ca_file) if tls.ca_file is not None else None
    )
    if tls.cert_file is not None and tls.key_file is not None:
        context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    if tls.insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
