"""``[trust]``: fleet trust's settings (off unless a CA key is given).

    [trust]
    ca_keys = ["pk…"]               # one or two fleet CA keys (two during a rotation): the key
                                    # string `presence-agent fleet-ca init` prints, or a file holding it
    certificate = ""                # this device's certificate; "" = <state_dir>/device.cert
    revocation_list = ""            # a revocation list to start with; "" = <state_dir>/revoked.cose
    sealing = "auto"                # sealed links (agent.core.session): "off", "offer", "require";
                                    # "auto" = "require" with ca_keys, else "offer"
    encrypt = "auto"                # sealed frames encrypted: "on", "off"; "auto" = "on" with ca_keys
    unsealed_leaves = false         # "require" still takes a plain link to a leaf (a MicroPython
                                    # node cannot seal)
    mesh_key = ""                   # the fleet's mesh key (seals radio frames); "" = <state_dir>/mesh.key
                                    # if present (`fleet-ca init` makes DIR/mesh.key: copy it there, 0600)

With ``ca_keys`` empty the mesh is open, as by default; ``sealing``, ``encrypt`` and
``unsealed_leaves`` apply with or without it. :mod:`agent.config`
fills this from the TOML file and checks the rules attached to each field;
:mod:`agent.state.trust_files` reads the files when the agent starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from agent.core.errors import PeerKeyError
from agent.core.keys import public_key_from_string
from agent.core.limits import MAX_TRUSTED_CA_KEYS
from agent.core.session import Sealing
from agent.core.settings import rule

__all__ = ["CERTIFICATE_FILE", "MESH_KEY_FILE", "REVOCATION_LIST_FILE", "TrustSettings", "is_key_string"]

#: This device's certificate in the state directory, unless ``[trust] certificate`` says otherwise.
CERTIFICATE_FILE: Final = "device.cert"
#: A revocation list in the state directory, loaded at start if present.
REVOCATION_LIST_FILE: Final = "revoked.cose"
#: The fleet's mesh key in the state directory, loaded at start if present (it seals radio frames).
MESH_KEY_FILE: Final = "mesh.key"

_KEY_PREFIX: Final = "pk"


def is_key_string(text: str) -> bool:
    """Whether ``text`` is written as a key string (``pk…``) rather than a file path."""
    return text.startswith(_KEY_PREFIX) and "/" not in text


def _valid_ca_key(text: str) -> bool:
    if not text:
        return False
    if not is_key_string(text):
        return True  # a path: read (and judged) when the agent starts
    try:
        public_key_from_string(text)
    except PeerKeyError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class TrustSettings:
    """``[trust]``: which fleet CAs this device trusts, and its own certificate."""

    ca_keys: tuple[str, ...] = rule(
        (),
        f"a list of at most {MAX_TRUSTED_CA_KEYS} CA keys (key strings, or paths of files holding one)",
        lambda v: len(v) <= MAX_TRUSTED_CA_KEYS and all(_valid_ca_key(k) for k in v),
    )
    certificate: str = ""
    revocation_list: str = ""
    sealing: str = rule(
        "auto",
        'one of "auto", "off", "offer", "require"',
        lambda v: v in ("auto", *(s.value for s in Sealing)),
    )
    encrypt: str = rule("auto", 'one of "auto", "on", "off"', lambda v: v in ("auto", "on", "off"))
    unsealed_leaves: bool = False
    mesh_key: str = ""

    @property
    def enabled(self) -> bool:
        """Trust is on: uncertified peers are refused."""
        return bool(self.ca_keys)

    @property
    def sealing_mode(self) -> Sealing | None:
        """The engine's ``sealing`` (``None``: its default, by whether trust is on)."""
        return None if self.sealing == "auto" else Sealing(self.sealing)

    @property
    def encrypt_frames(self) -> bool | None:
        """The engine's ``encrypt`` (``None``: its default, by whether trust is on)."""
        return None if self.encrypt == "auto" else self.encrypt == "on"
