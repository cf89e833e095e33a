"""What a BLE node keeps on its flash: its key, its configuration and its record counter.

Files (written by ``scripts/provision-node``, except the counter, which the node writes)::

    node.key     the 32-byte Ed25519 seed, raw (never leaves the node and the provisioning host)
    node.json    {"name": str, "metadata": {...}, "advertising_interval_ms": int,
                  "keepalive_s": number, "dead_s": number, "router": "<peer id hex>" or absent}
    node.counter the counter ceiling, decimal ASCII: no counter at or above it was ever handed out
    node.cert    the fleet CA's certificate for this node's key (COSE_Sign1 bytes, as
                 ``presence-agent fleet-ca issue`` wrote it); absent on an open mesh

**The counter** only grows and is never handed out twice, across reboots, crashes and re-flashes
of the firmware (the files stay). Counters are reserved in blocks: the ceiling is raised by
``BLOCK`` and made durable (written to a temporary file, then renamed over the old one, which is
atomic on littlefs and FAT) *before* any counter below the new ceiling is returned. A reboot
resumes at the ceiling, skipping what the block had left: at most ``BLOCK`` counters are lost
per boot, which a 32-bit counter can afford. A leftover temporary file (power lost mid-write) is
ignored: the old ceiling is still whole.
"""

import json

import records

BLOCK = 16
DEFAULTS = {
    "name": "",
    "metadata": {},
    "advertising_interval_ms": 250,
    "keepalive_s": 5.0,
    "dead_s": 15.0,
}
_SEED_BYTES = 32


class StoreError(ValueError):
    """A file on the node that cannot be used; the message names the file and what is wrong."""


def _read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def _write_atomically(path, data):
    import os

    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        if hasattr(f, "flush"):
            f.flush()
    try:
        os.rename(tmp, path)
    except OSError:
        os.remove(path)  # FAT (MicroPython's VFS) does not rename over an existing file
        os.rename(tmp, path)


class CounterFile:
    """Record counters that never repeat (see the module docstring)."""

    def __init__(self, path="node.counter", block=BLOCK):
        self.path = path
        self.block = block
        raw = _read(path)
        if raw is None:
            self._next = 1
        else:
            try:
                self._next = int(raw.decode().strip())
            except (ValueError, UnicodeError):
                raise StoreError(
                    "%s: not a counter ceiling (%r): restore it, never delete it" % (path, raw[:20])
                ) from None
        self._ceiling = self._next

    def next(self):
        if self._next >= self._ceiling:
            self._reserve(self._next + self.block)
        counter = self._next
        self._next += 1
        return counter

    def advance_past(self, counter):
        """A newer copy of our own record was seen: never hand out ``counter`` or below again."""
        if counter >= self._next:
            self._next = counter + 1
            if self._next >= self._ceiling:
                self._reserve(self._next + self.block)

    def _reserve(self, ceiling):
        if ceiling > records.MAX_COUNTER:
            raise StoreError("%s: the record counter is exhausted" % self.path)
        _write_atomically(self.path, ("%d\n" % ceiling).encode())
        self._ceiling = ceiling


def load_seed(path="node.key"):
    """The node's Ed25519 seed."""
    raw = _read(path)
    if raw is None or len(raw) != _SEED_BYTES:
        raise StoreError("%s: expected the node's 32-byte key (run scripts/provision-node)" % path)
    return raw


def load_certificate(path="node.cert"):
    """The node's fleet certificate, or b"" when it has none (an open mesh)."""
    raw = _read(path)
    if raw is None:
        return b""
    if not 0 < len(raw) <= records.MAX_CERTIFICATE_BYTES:
        raise StoreError(
            "%s: expected a certificate of 1..%d bytes (presence-agent fleet-ca issue)"
            % (path, records.MAX_CERTIFICATE_BYTES)
        )
    return raw


def load_config(path="node.json"):
    """The node's configuration with defaults filled in; raises StoreError naming what is wrong."""
    raw = _read(path)
    config = dict(DEFAULTS)
    if raw is None:
        return config
    try:
        given = json.loads(raw.decode())
    except (ValueError, UnicodeError):
        raise StoreError("%s: not JSON" % path) from None
    if not isinstance(given, dict):
        raise StoreError("%s: expected a JSON object" % path)
    for key in given:
        if key not in DEFAULTS and key != "router":
            raise StoreError("%s: unknown key %r" % (path, key))
    config.update(given)
    if not isinstance(config["name"], str):
        raise StoreError("%s: name must be text" % path)
    try:
        records.check_metadata(config["metadata"])
    except ValueError as exc:
        raise StoreError("%s: metadata: %s" % (path, exc)) from None
    if not isinstance(config["metadata"], dict):
        raise StoreError("%s: metadata must be a JSON object" % path)
    interval = config["advertising_interval_ms"]
    if not isinstance(interval, int) or not 20 <= interval <= 10240:
        raise StoreError("%s: advertising_interval_ms must be 20..10240 (BLE's range)" % path)
    if not 0 < config["keepalive_s"] < config["dead_s"]:
        raise StoreError("%s: keepalive_s must be positive and below dead_s" % path)
    router = config.get("router")
    if router is not None:
        try:
            config["router"] = bytes.fromhex(router)
        except (ValueError, TypeError):
            raise StoreError("%s: router must be a peer id in hex" % path) from None
    return config


def save_metadata(metadata, path="node.json"):
    """Set the node's metadata in its configuration (checked first, written atomically)."""
    records.check_metadata(metadata)
    config = load_config(path)
    config["metadata"] = metadata
    if isinstance(config.get("router"), bytes):
        config["router"] = config["router"].hex()
    _write_atomically(path, json.dumps(config).encode())
