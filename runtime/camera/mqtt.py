"""Events and detections to an MQTT broker (paho-mqtt, the ``mqtt`` extra),
with Home Assistant discovery.

Topics under ``--mqtt-topic PREFIX`` (default ``ssdkit/HOSTNAME``):

    PREFIX/status                       "online" / "offline" (retained; "offline" is also the last will)
    PREFIX/events/TYPE                  one JSON event (appeared, disappeared, zone_enter, zone_leave,
                                        zone_dwell, line_cross), QoS --mqtt-qos (default 1), not retained
    PREFIX/detections                   a summary of the latest frame at --mqtt-summary-rate per second
                                        (frame, timestamp, counts per label, detections), QoS 0, not retained
    PREFIX/zones/ZONE/occupied          "ON" / "OFF" (retained)
    PREFIX/zones/ZONE/count             tracks in the zone now (retained)
    PREFIX/lines/LINE/in, .../out       crossings so far (retained)

With discovery on (default), each zone appears in Home Assistant as a
``binary_sensor`` (occupancy) and a ``sensor`` (count), each line as two
sensors (in, out), under one device; the configs are retained under
``homeassistant/`` and sent again when Home Assistant says it is online.

Publishing never blocks the loop: ``publish`` appends to a bounded queue
(the oldest message is dropped and counted when it is full) that a sender
thread hands to paho while the broker is connected. paho reconnects with
backoff (1 s to 30 s) for as long as the loop runs; QoS 1 and 2 messages
unacknowledged when the connection broke are sent again, QoS 0 ones are lost.
"""
from __future__ import annotations

import json
import logging
import re
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from .. import limits

DEFAULT_PORT, DEFAULT_TLS_PORT = 1883, 8883
# QoS 1/2 messages handed to paho and not yet acknowledged; beyond, the sender waits and the queue
# (bounded, oldest dropped) takes the rest, so a broker that is up but slow cannot grow memory either.
PAHO_WINDOW = 100

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MqttOptions:
    """The ``--mqtt*`` options.

    Attributes:
      host, port: the broker (port default 1883, 8883 with TLS).
      topic: the prefix of every topic.
      username, password: broker login (the password from --mqtt-password-file or SSDKIT_MQTT_PASSWORD).
      tls: encrypt; ``ca_file`` (implies tls) is the CA that signed the broker's
        certificate (default: the system's), ``cert_file``/``key_file`` a client certificate.
      qos: QoS of events and state topics (summaries are always QoS 0).
      summary_rate: detection summaries per second (0: none).
      queue_size: messages kept while the broker is away or slow.
      ha_discovery, ha_prefix: Home Assistant MQTT discovery and its topic prefix.
    """

    host: str
    port: int | None = None
    topic: str = "ssdkit/camera"
    client_id: str | None = None
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    qos: int = 1
    summary_rate: float = 1.0
    queue_size: int = 1000
    ha_discovery: bool = True
    ha_prefix: str = "homeassistant"
    keepalive: int = 30

    def __post_init__(self):
        # The numbers' ranges are ``limits.LIMITS``'s, as the command line checks them.
        limits.check(qos=self.qos, message_queue=self.queue_size, summary_rate=self.summary_rate)
        if not re.fullmatch(r"[^#+\s]+(/[^#+\s]+)*", self.topic):
            raise ValueError(f"--mqtt-topic {self.topic!r}: expected a topic prefix such as ssdkit/garage "
                             "(no wildcards, spaces or empty levels)")
        for flag, path in (("--mqtt-ca", self.ca_file), ("--mqtt-cert", self.cert_file), ("--mqtt-key", self.key_file)):
            if path is not None and not Path(path).is_file():
                raise FileNotFoundError(f"{flag} {path}: no such file")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("--mqtt-cert and --mqtt-key go together (a client certificate and its key)")

    @property
    def use_tls(self) -> bool:
        return self.tls or self.ca_file is not None or self.cert_file is not None


def parse_broker(text: str) -> tuple[str, int | None]:
    """``HOST`` or ``HOST:PORT`` ([v6]:PORT for IPv6) -> (host, port or None)."""
    found = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\](?::(\d+))?|([^:\s/]+)(?::(\d+))?", text)
    if not found:
        raise ValueError(f"--mqtt {text!r}: expected HOST or HOST:PORT, e.g. 127.0.0.1:1883")
    host = found.group(1) or found.group(3)
    port = found.group(2) or found.group(4)
    if port is not None and not 0 < int(port) < 65536:
        raise ValueError(f"--mqtt {text!r}: port {port} is not between 1 and 65535")
    return host, None if port is None else int(port)


def default_topic() -> str:
    return "ssdkit/" + (re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "camera")


class MqttPublisher:
    """One connection to the broker for the loop's lifetime.

    ``publish`` (and ``event``, ``summary``, ``states``) may be called from
    any thread and returns at once. ``close`` sends what is queued (for at
    most ``timeout`` seconds), marks the camera offline and disconnects.
    """

    def __init__(self, options: MqttOptions, zones: tuple[str, ...] = (), lines: tuple[str, ...] = (),
                 report=None):
        import paho.mqtt.client as mqtt

        self._mqtt = mqtt
        self.options = options
        self.zones, self.lines = zones, lines
        self._report = report or log.warning  # connection changes: shown unless -q
        self._queue: deque[tuple[str, bytes, int, bool]] = deque()
        self._cond = threading.Condition()
        self._connected = False
        self._closing = False
        self._connected_at_close: bool | None = None
        self._states: dict[str, str] = {}  # retained state topic -> payload, sent again on each connection
        self._last_states: dict | None = None  # the last ``states`` given
        self._last_summary = float("-inf")
        self.counts = {"published": 0, "dropped": 0, "connections": 0}
        self._last_problem: str | None = None

        port = options.port or (DEFAULT_TLS_PORT if options.use_tls else DEFAULT_PORT)
        self.address = f"{options.host}:{port}"
        node = re.sub(r"[^A-Za-z0-9_-]", "_", options.topic)
        self.node_id = node
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=options.client_id or f"{node}-{id(self):x}",
                             protocol=mqtt.MQTTv311)
        if options.username is not None:
            client.username_pw_set(options.username, options.password)
        if options.use_tls:
            client.tls_set(ca_certs=options.ca_file, certfile=options.cert_file, keyfile=options.key_file)
        client.will_set(self.topic("status"), "offline", qos=1, retain=True)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.max_queued_messages_set(PAHO_WINDOW)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        client.on_connect_fail = self._on_connect_fail
        self._client = client
        client.connect_async(options.host, port, keepalive=options.keepalive)
        client.loop_start()
        self._sender = threading.Thread(target=self._send, name="mqtt-send", daemon=True)
        self._sender.start()

    def topic(self, suffix: str) -> str:
        return f"{self.options.topic}/{suffix}"

    # Called by the loop (the output thread): never blocks.

    def publish(self, suffix: str, payload: dict | str, qos: int = 0, retain: bool = False) -> None:
        data = (json.dumps(payload, separators=(",", ":")) if isinstance(payload, dict) else payload).encode()
        with self._cond:
            if len(self._queue) >= self.options.queue_size:
                self._queue.popleft()
                self.counts["dropped"] += 1
            self._queue.append((self.topic(suffix), data, qos, retain))
            self._cond.notify()

    def event(self, event: dict) -> None:
        self.publish(f"events/{event['type']}", event, qos=self.options.qos)

    def summary_due(self, now: float | None = None) -> bool:
        """Whether a frame's summary would be sent now (``summary_rate``): the
        loop asks before it builds the summary's record, so frames between
        summaries cost nothing here."""
        rate = self.options.summary_rate
        now = time.monotonic() if now is None else now
        return rate > 0 and now - self._last_summary >= 1 / rate

    def summary(self, record: dict, now: float | None = None) -> None:
        """A frame's summary (``outputs.record``), if one is due (``summary_due``)."""
        now = time.monotonic() if now is None else now
        if not self.summary_due(now):
            return
        self._last_summary = now
        counts: dict[str, int] = {}
        for d in record["detections"]:
            counts[d["label"]] = counts.get(d["label"], 0) + 1
        self.publish("detections", {"frame": record["frame"], "timestamp": record["timestamp"], "counts": counts,
                                    "detections": record["detections"]})

    def states(self, states: dict) -> None:
        """Zone and line counts (``Scene.states``): the retained topics whose value changed.
        Counts change on events, not every frame: an unchanged ``states`` is one comparison."""
        if states == self._last_states:
            return
        self._last_states = states
        values = {}
        for zone, count in states.get("zones", {}).items():
            values[f"zones/{zone}/occupied"] = "ON" if count else "OFF"
            values[f"zones/{zone}/count"] = str(count)
        for line, counts in states.get("lines", {}).items():
            values[f"lines/{line}/in"] = str(counts["in"])
            values[f"lines/{line}/out"] = str(counts["out"])
        for suffix, value in values.items():
            if self._states.get(suffix) != value:
                self._states[suffix] = value
                self.publish(suffix, value, qos=self.options.qos, retain=True)

    def stats(self) -> dict:
        with self._cond:
            connected = self._connected if self._connected_at_close is None else self._connected_at_close
            return {"broker": self.address, "connected": connected, "queued": len(self._queue),
                    **self.counts, "reconnects": max(0, self.counts["connections"] - 1)}

    def close(self, timeout: float = 2.0) -> None:
        """Sends what is queued while connected (at most ``timeout`` s), then goes offline."""
        deadline = time.monotonic() + timeout
        with self._cond:
            # The first connection attempt still in flight (a short run, a slow TLS handshake): wait for
            # its outcome, so the run says why nothing was sent (refused, unreachable) or sends it.
            while (not self._connected and not self.counts["connections"] and self._last_problem is None
                   and time.monotonic() < deadline):
                self._cond.wait(0.05)
            while self._queue and self._connected and time.monotonic() < deadline:
                self._cond.wait(0.05)
            self._closing = True
            self._cond.notify_all()
        self._sender.join(timeout=2.0)
        self._connected_at_close = self._connected  # what the final statistics say
        if self._connected:
            self._client.publish(self.topic("status"), "offline", qos=1, retain=True).wait_for_publish(
                max(0.1, deadline - time.monotonic()))
        self._client.disconnect()
        self._client.loop_stop()
        unsent = len(self._queue)
        if unsent:
            with self._cond:
                self.counts["dropped"] += unsent
                self._queue.clear()

    # The sender thread and paho's callbacks (paho's network thread).

    def _send(self) -> None:
        no_conn = self._mqtt.MQTTErrorCode.MQTT_ERR_NO_CONN
        queue_full = self._mqtt.MQTTErrorCode.MQTT_ERR_QUEUE_SIZE
        while True:
            with self._cond:
                while not self._closing and not (self._queue and self._connected):
                    self._cond.wait()
                if self._closing:
                    return
                message = self._queue.popleft()
                self._cond.notify_all()
            topic, payload, qos, retain = message
            rc = self._client.publish(topic, payload, qos=qos, retain=retain).rc
            if rc == no_conn and qos == 0:  # the connection broke just now: keep it for the next one
                with self._cond:
                    self._queue.appendleft(message)
                    self._connected = self._client.is_connected()
            elif rc == queue_full:  # paho holds PAHO_WINDOW unacknowledged messages: wait for acks
                with self._cond:
                    if len(self._queue) >= self.options.queue_size:
                        self.counts["dropped"] += 1  # it was the oldest anyway
                    else:
                        self._queue.appendleft(message)
                    self._cond.wait(0.05)

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._problem(f"mqtt: {self.address} refused the connection ({reason_code}); retrying")
            return
        client.publish(self.topic("status"), "online", qos=1, retain=True)
        if self.options.ha_discovery:
            client.subscribe(f"{self.options.ha_prefix}/status", qos=1)
            self._discovery()
        for suffix, value in list(self._states.items()):
            client.publish(self.topic(suffix), value, qos=self.options.qos, retain=True)
        with self._cond:
            self._connected = True
            self.counts["connections"] += 1
            again = self.counts["connections"] > 1
            self._cond.notify_all()
        self._last_problem = None
        self._report(f"mqtt: {'reconnected' if again else 'connected'} to {self.address}")

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        with self._cond:
            was = self._connected
            self._connected = False
        if was and not self._closing:
            self._report(f"mqtt: lost {self.address} ({reason_code}); reconnecting, queueing up to "
                         f"{self.options.queue_size} messages")
        elif not was and not self._closing:
            self._problem(f"mqtt: cannot reach {self.address} ({reason_code}); retrying")

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self._cond:
            self.counts["published"] += 1

    def _on_message(self, client, userdata, message) -> None:
        if message.topic == f"{self.options.ha_prefix}/status" and message.payload == b"online":
            self._discovery()  # Home Assistant restarted: it forgot the non-retained state

    def _problem(self, message: str) -> None:
        if message != self._last_problem:  # once per kind of failure, not once per retry
            self._last_problem = message
            self._report(message)

    def _on_connect_fail(self, client, userdata) -> None:
        self._problem(f"mqtt: cannot reach {self.address}; retrying every 1 to 30 s")

    def _discovery(self) -> None:
        """Home Assistant MQTT discovery configs (retained) for every zone and line."""
        device = {"identifiers": [self.node_id], "name": f"ssdkit {self.options.topic}", "manufacturer": "ssdkit",
                  "model": "ssdkit camera"}
        common = {"availability_topic": self.topic("status"), "device": device}
        configs = []
        for zone in self.zones:
            configs.append(("binary_sensor", f"{zone}_occupied", {
                "name": f"{zone} occupied", "state_topic": self.topic(f"zones/{zone}/occupied"),
                "device_class": "occupancy", "payload_on": "ON", "payload_off": "OFF"}))
            configs.append(("sensor", f"{zone}_count", {
                "name": f"{zone} count", "state_topic": self.topic(f"zones/{zone}/count"),
                "state_class": "measurement", "unit_of_measurement": "objects"}))
        for line in self.lines:
            for direction in ("in", "out"):
                configs.append(("sensor", f"{line}_{direction}", {
                    "name": f"{line} {direction}", "state_topic": self.topic(f"lines/{line}/{direction}"),
                    "state_class": "total_increasing", "unit_of_measurement": "objects"}))
        for component, object_id, config in configs:
            payload = {**config, "unique_id": f"{self.node_id}_{object_id}", **common}
            self._client.publish(f"{self.options.ha_prefix}/{component}/{self.node_id}/{object_id}/config",
                                 json.dumps(payload, separators=(",", ":")), qos=1, retain=True)
