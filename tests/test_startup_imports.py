"""What a LAN agent imports to start: nothing that only another feature, an error message or a
tool needs (figure 5 counts every module an idle agent holds; docs/PERFORMANCE.md).

A first start runs in a fresh interpreter: the command line is built, the runtime and the LAN
transport are imported, and the identity and the store are created in an empty state directory.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Final

ROOT = Path(__file__).resolve().parent.parent

#: Module -> why a LAN agent has no use for it.
NOT_AT_START: Final = {
    "cryptography.hazmat.primitives.serialization": "agent.state.identity reads its key file",
    "tempfile": "new files come from agent.state.layout.new_private_file",
    "shutil": "argparse's help formatter is given the terminal width by agent.cli",
    "difflib": "only an unknown configuration key's message suggests a name",
    "bz2": "brought by shutil",
    "lzma": "brought by shutil",
    "paho": "MQTT",
    "bleak": "BLE",
    "serial": "the radio dongle",
    "agent.sim": "the simulator",
    "agent.web.server": "the web view",
}

FIRST_START = """
import json, sys
from pathlib import Path
import agent.cli
agent.cli.build_parser()
import agent.runtime.run, agent.transports.lan
from agent.state.identity import load_or_create_identity
from agent.state.store import StateStore
state = Path(sys.argv[1])
identity = load_or_create_identity(state)
StateStore.open(state, identity.public_key).close()
print(json.dumps(sorted(sys.modules)))
"""


def test_a_first_start_imports_nothing_only_other_features_need(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", FIRST_START, str(tmp_path / "state")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    loaded = set(json.loads(done.stdout))
    assert (tmp_path / "state" / "identity.key").exists()
    wrong = {
        name: why
        for name, why in NOT_AT_START.items()
        if any(m == name or m.startswith(name + ".") for m in loaded)
    }
    assert not wrong


SEALED_LINK = """
import json, sys
from agent.core.session import SessionOffer, derive_session
a, b = SessionOffer.from_seed(bytes(range(32))), SessionOffer.from_seed(bytes(range(1, 33)))
keys, nonces = (b"\\x01" * 32, b"\\x02" * 32), (b"\\xaa" * 16, b"\\xbb" * 16)
ours = derive_session(a, b.public, own_key=keys[0], remote_key=keys[1],
                      own_nonce=nonces[0], remote_nonce=nonces[1])
theirs = derive_session(b, a.public, own_key=keys[1], remote_key=keys[0],
                        own_nonce=nonces[1], remote_nonce=nonces[0])
assert theirs.open(ours.seal(b"frame")) == b"frame"
print(json.dumps(sorted(sys.modules)))
"""


def test_a_sealed_link_loads_no_openssl_bindings() -> None:
    # cryptography's X25519 constructors import its OpenSSL backend's Python bindings (0.4 MB an
    # agent kept from its first link on): the key agreement is libsodium's (agent.core.x25519).
    done = subprocess.run(
        [sys.executable, "-c", SEALED_LINK], cwd=ROOT, capture_output=True, text=True, check=True, timeout=60
    )
    loaded = set(json.loads(done.stdout))
    assert "agent.core.x25519" in loaded
    assert not {m for m in loaded if m.startswith("cryptography.hazmat.backends")}
