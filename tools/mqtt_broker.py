"""A real MQTT broker on 127.0.0.1 for the tests and benchmarks: amqtt (a
pure-Python broker from the package index, the ``dev`` extra) in a child
process, so ``make test`` needs no system package and no root.

    with Broker() as broker:            # a free port; broker.port
        ...
        broker.kill()                   # the broker goes away (SIGKILL: no goodbye to clients)
        broker.start()                  # and comes back on the same port

``Broker(nice=10)`` runs it at a lower priority: a benchmark of the camera
loop measures the loop, while a deployed loop's broker runs elsewhere.
``Broker(tls=folder)`` serves TLS with a certificate made for 127.0.0.1 (its
CA is ``broker.ca_file``); ``users={"name": "password"}`` turns anonymous
access off. ``subscribe`` returns a client that records what it receives.
"""
from __future__ import annotations

import datetime
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def amqtt_command() -> list[str]:
    script = Path(sys.executable).with_name("amqtt")
    if script.exists():
        return [str(script)]
    found = shutil.which("amqtt")
    if found is None:
        raise RuntimeError("amqtt is not installed: pip install 'ssdkit[dev]' (or pip install amqtt)")
    return [found]


class Broker:
    def __init__(self, port: int | None = None, tls: bool = False, users: dict[str, str] | None = None,
                 nice: int = 0):
        self.port = port or free_port()
        self.nice = nice
        self.folder = Path(tempfile.mkdtemp(prefix="ssdkit-broker-"))
        self.ca_file: Path | None = None
        listener = {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}
        if tls:
            self.ca_file, cert, key = _certificates(self.folder)
            listener.update(ssl=True, certfile=str(cert), keyfile=str(key))
        plugins: dict = {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": not users}}
        if users:
            from pwdlib.hashers.argon2 import Argon2Hasher

            hasher = Argon2Hasher()
            passwords = self.folder / "passwords"
            passwords.write_text("".join(f"{name}:{hasher.hash(pw)}\n" for name, pw in users.items()))
            plugins["amqtt.plugins.authentication.FileAuthPlugin"] = {"password_file": str(passwords)}
        self.config = self.folder / "broker.yaml"
        self.config.write_text(json.dumps({"listeners": {"default": listener}, "plugins": plugins}))  # JSON is YAML
        self.log = self.folder / "broker.log"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> "Broker":
        """Starts the broker and waits until it accepts connections."""
        with open(self.log, "a") as log:
            niced = ["nice", "-n", str(self.nice)] if self.nice else []
            self.process = subprocess.Popen([*niced, *amqtt_command(), "-c", str(self.config)], stdout=log,
                                            stderr=log, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"amqtt exited with {self.process.returncode}:\n{self.log.read_text()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError(f"amqtt did not listen on {self.port} within {timeout} s")
                time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: the clients see their connection drop, as when a broker host dies."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> "Broker":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def subscribe(self, topic: str = "#", **login) -> "Recorder":
        return Recorder(self, topic, **login)


class Recorder:
    """A paho client subscribed to ``topic`` that keeps every message: (topic, payload str, retain)."""

    def __init__(self, broker: Broker, topic: str, username: str | None = None, password: str | None = None):
        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, str, bool]] = []
        self._lock = threading.Lock()
        self.subscribed = threading.Event()
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"recorder-{os.getpid()}-{id(self):x}")
        if username:
            client.username_pw_set(username, password)
        if broker.ca_file:
            client.tls_set(ca_certs=str(broker.ca_file))
        client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        client.on_subscribe = lambda *args: self.subscribed.set()
        client.on_message = self._on_message
        client.reconnect_delay_set(0.2, 1)
        client.connect_async("127.0.0.1", broker.port)
        client.loop_start()
        self.client = client
        if not self.subscribed.wait(20):
            raise RuntimeError("the recorder could not subscribe")

    def _on_message(self, client, userdata, message) -> None:
        with self._lock:
            self.messages.append((message.topic, message.payload.decode(), bool(message.retain)))

    def take(self, prefix: str = "") -> list[tuple[str, str, bool]]:
        with self._lock:
            return [m for m in self.messages if m[0].startswith(prefix)]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it (PEM files)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import ipaddress

    now = datetime.datetime.now(datetime.timezone.utc)

    def name(text: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("ssdkit test CA")).issuer_name(name("ssdkit test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(name("127.0.0.1")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths
