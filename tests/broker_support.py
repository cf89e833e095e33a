"""A private mosquitto broker per test, for the MQTT mirror tests (imported by bare name from tests/).

Each :class:`Mosquitto` listens on its own free loopback port (never 1883, where a
system service installed with the Debian package may be running), keeps no state
on disk and logs to a file in its directory. :func:`subscribe_retained` reads what
the broker retains through the real ``mosquitto_sub`` CLI, so the check does not
share code (or bugs) with the paho-mqtt client under test.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

HOST = "127.0.0.1"
START_TIMEOUT = 10.0


def _tool(name: str, fallback_dir: str) -> str | None:
    """``name`` on PATH, else in ``fallback_dir`` (non-root PATHs often lack /usr/sbin)."""
    found = shutil.which(name)
    if found:
        return found
    candidate = Path(fallback_dir) / name
    return str(candidate) if os.access(candidate, os.X_OK) else None


def mosquitto_binary() -> str | None:
    return _tool("mosquitto", "/usr/sbin")


def missing_broker_tools() -> list[str]:
    """Which of the programs these helpers run are not installed (empty when all are)."""
    tools = {
        "mosquitto": mosquitto_binary(),
        "mosquitto_sub": _tool("mosquitto_sub", "/usr/bin"),
        "mosquitto_passwd": _tool("mosquitto_passwd", "/usr/bin"),
    }
    return [name for name, path in tools.items() if path is None]


def _require(path: str | None, name: str) -> str:
    if path is None:
        raise FileNotFoundError(f"{name} is not installed (Debian packages: mosquitto mosquitto-clients)")
    return path


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of a throwaway CA, a server certificate for localhost/127.0.0.1 and a client certificate."""

    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_tls_files(directory: Path) -> TlsFiles:
    """A CA and a server and a client certificate signed by it (EC P-256), written to ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "presence-agent test CA")])
    ca_cert = (
        _builder(ca_name, ca_name, ca_key.public_key(), ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        _builder(_leaf_name("localhost"), ca_name, server_key.public_key(), ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    client_key = ec.generate_private_key(ec.SECP256R1())
    client_cert = (
        _builder(_leaf_name("presence-agent client"), ca_name, client_key.public_key(), ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    files = TlsFiles(
        ca_cert=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        client_cert=directory / "client.pem",
        client_key=directory / "client.key",
    )
    files.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files.server_cert.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    files.client_cert.write_bytes(client_cert.public_bytes(serialization.Encoding.PEM))
    _write_key(files.server_key, server_key)
    _write_key(files.client_key, client_key)
    return files


def _leaf_name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    issuer_key: ec.EllipticCurvePublicKey,
) -> x509.CertificateBuilder:
    # Key identifiers: OpenSSL 3 strict verification (Python 3.13's default context) rejects certificates
    # without them.
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key), critical=False)
    )


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        os.fchmod(out.fileno(), 0o600)  # the mode given to open() does not apply to an existing file
        out.write(pem)


def free_tcp_port() -> int:
    """A loopback TCP port nobody is bound to right now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


class Mosquitto:
    """A mosquitto broker in its own process on a private loopback port, kept across restarts."""

    def __init__(
        self,
        tmp_dir: Path,
        *,
        tls: TlsFiles | None = None,
        users: dict[str, str] | None = None,
        require_client_cert: bool = False,
        acl_file: Path | None = None,
    ) -> None:
        if require_client_cert and tls is None:
            raise ValueError("require_client_cert needs tls")
        self.dir = tmp_dir
        self.tls = tls
        self.users = dict(users or {})
        self.require_client_cert = require_client_cert
        #: A mosquitto ``acl_file`` (who may read and write which topics), or None: everyone everything.
        self.acl_file = acl_file
        self.host = HOST
        self.conf_path = tmp_dir / "mosquitto.conf"
        self.log_path = tmp_dir / "mosquitto.log"
        self._port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the broker has no port until start()")
        return self._port

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> Mosquitto:
        """Start the broker and wait until it accepts connections; the first start picks the port."""
        if self.running:
            raise RuntimeError("the broker is already running")
        binary = _require(mosquitto_binary(), "mosquitto")
        self.dir.mkdir(parents=True, exist_ok=True)
        if self._port is None:
            self._port = free_tcp_port()
        self._write_config()
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            with self.log_path.open("ab") as log:  # also catches what mosquitto prints before its log opens
                self._proc = subprocess.Popen(
                    [binary, "-c", str(self.conf_path)], stdout=log, stderr=log, stdin=subprocess.DEVNULL
                )
            while self._proc.poll() is None and time.monotonic() < deadline:
                if " running" in self._log_since(log_offset) and self._accepts_connections():
                    return self
                time.sleep(0.02)
            port_busy = "Address already in use" in self._log_since(log_offset)
            if self._proc.poll() is None or time.monotonic() >= deadline or not port_busy:
                state = "exited" if self._proc.poll() is not None else f"not ready in {START_TIMEOUT:g} s"
                self.kill()
                raise RuntimeError(f"mosquitto on port {self._port} {state}; log tail:\n{self._log_tail()}")
            # The port may linger for a moment after kill(), or another program grabbed it: try again.
            time.sleep(0.1)

    def pause(self) -> None:
        """SIGSTOP: the broker freezes with its sockets open (a hung or overloaded broker)."""
        assert self._proc is not None and self.running
        self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self._proc is not None
        self._proc.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL: the broker dies without a clean shutdown."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGKILL)
            self._proc.wait()

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL if the broker is still there after ``timeout`` s."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self) -> Mosquitto:
        """Stop if running, then start again on the same port (with persistence off, nothing is kept)."""
        self.stop()
        return self.start()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> Mosquitto:
        return self if self.running else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _write_config(self) -> None:
        lines = [
            "per_listener_settings false",
            f"listener {self.port} {self.host}",
            "persistence false",
            f"log_dest file {self.log_path}",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
        ]
        if os.geteuid() == 0:
            # Started as root, mosquitto 2 switches to user "mosquitto" before opening its log, which then
            # cannot reach the private pytest tmp dir ("Unable to open log file"). A test broker on
            # loopback may stay root.
            lines.append("user root")
        if self.users:
            password_file = self.dir / "passwords"
            password_file.unlink(missing_ok=True)
            passwd = _require(_tool("mosquitto_passwd", "/usr/bin"), "mosquitto_passwd")
            for name, password in self.users.items():
                create = [] if password_file.exists() else ["-c"]
                subprocess.run(
                    [passwd, *create, "-b", str(password_file), name, password],
                    check=True,
                    capture_output=True,
                )
            lines += ["allow_anonymous false", f"password_file {password_file}"]
        else:
            lines.append("allow_anonymous true")
        if self.acl_file is not None:
            lines.append(f"acl_file {self.acl_file}")
        if self.tls:
            lines += [
                f"cafile {self.tls.ca_cert}",
                f"certfile {self.tls.server_cert}",
                f"keyfile {self.tls.server_key}",
                f"require_certificate {'true' if self.require_client_cert else 'false'}",
            ]
        self.conf_path.write_text("\n".join(lines) + "\n")

    def _accepts_connections(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def _log_since(self, offset: int) -> str:
        with self.log_path.open("rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")

    def _log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


def subscribe_retained(
    broker: Mosquitto | str | int,
    topic_filter: str,
    *,
    wait: float = 1.0,
    cafile: Path | None = None,
    username: str | None = None,
    password: str | None = None,
    extra_args: Sequence[str] = (),
) -> dict[str, bytes]:
    """The retained messages matching ``topic_filter``, topic -> payload, as ``mosquitto_sub`` sees them.

    ``broker`` is a :class:`Mosquitto` (its CA, and client certificate when required, are used), an
    ``mqtt://`` / ``mqtts://`` URL (``mqtts`` needs ``cafile``) or a plain-MQTT port on 127.0.0.1.
    Retained messages arrive right after the subscription; this listens for ``wait`` s (less if a live,
    non-retained message arrives first: ``--retained-only`` stops there), then stops the subscriber.
    An empty retained payload never appears here: publishing one is how MQTT deletes the retained
    message. Topics containing a newline are not supported (one message per line).
    """
    sub = _require(_tool("mosquitto_sub", "/usr/bin"), "mosquitto_sub")
    tls_args: list[str] = []
    if isinstance(broker, Mosquitto):
        host, port = broker.host, broker.port
        if broker.tls:
            cafile = cafile or broker.tls.ca_cert
            if broker.require_client_cert:
                tls_args = ["--cert", str(broker.tls.client_cert), "--key", str(broker.tls.client_key)]
    elif isinstance(broker, int):
        host, port = HOST, broker
    else:
        url = urlsplit(broker)
        if url.scheme not in ("mqtt", "mqtts") or url.hostname is None:
            raise ValueError(f"not an mqtt:// or mqtts:// URL: {broker!r}")
        if url.scheme == "mqtts" and cafile is None:
            raise ValueError("an mqtts:// broker needs cafile")
        host, port = url.hostname, url.port or (8883 if url.scheme == "mqtts" else 1883)
    if cafile is not None:
        tls_args += ["--cafile", str(cafile)]
    auth_args = ["-u", username] if username is not None else []
    if password is not None:
        auth_args += ["-P", password]
    # %x prints the payload as hex, so binary payloads (newlines included) survive the line format.
    command = [sub, "-h", host, "-p", str(port), "-t", topic_filter, "--retained-only", "-F", "%t %x"]
    proc = subprocess.Popen(
        [*command, *tls_args, *auth_args, *extra_args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    try:
        out, err = proc.communicate(timeout=wait)
    except subprocess.TimeoutExpired:
        # After CONNACK mosquitto_sub exits 0 on SIGTERM, flushing what it printed; before, it exits 255.
        proc.terminate()
        out, err = proc.communicate()
        if proc.returncode == 255:
            raise RuntimeError(f"mosquitto_sub got no CONNACK from {host}:{port} within {wait:g} s") from None
    if proc.returncode != 0:
        message = err.decode(errors="replace").strip()
        raise RuntimeError(f"mosquitto_sub failed (exit {proc.returncode}): {message}")
    retained: dict[str, bytes] = {}
    for line in out.decode().splitlines():
        topic, _, payload_hex = line.rpartition(" ")  # topics may contain spaces, hex payloads cannot
        retained[topic] = bytes.fromhex(payload_hex)
    return retained
