"""The identity key file (``agent.state.identity``): ``identity.key`` as found on disk.

``identity``: the input is the file's bytes, written (mode 0600, in a 0700
state directory) where ``load_or_create_identity`` finds it. Contract: it
returns the Ed25519 identity the file holds or raises ``IdentityError``
naming the file, whatever the bytes (truncated or damaged PEM, another key
type, an encrypted key, DER, binary junk); it never replaces the file.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path
from typing import Final

from agent.state.identity import IdentityError, load_or_create_identity
from agent.state.layout import IDENTITY_FILE_NAME

from .contract import Target, require

_DIR: Final = Path(tempfile.mkdtemp(prefix="fuzz-identity-"))
atexit.register(shutil.rmtree, _DIR, True)
_KEY: Final = _DIR / IDENTITY_FILE_NAME


def identity(data: bytes) -> None:
    _KEY.write_bytes(data)
    _KEY.chmod(0o600)
    try:
        loaded = load_or_create_identity(_DIR)
    except IdentityError as exc:
        require(str(_KEY) in str(exc), f"the error does not name the file: {exc}")
        raise
    finally:
        require(_KEY.read_bytes() == data, "the key file was changed")
    require(len(loaded.public_key) == 32, "an identity without a 32-byte public key")


TARGETS = (Target("identity", identity, (IdentityError,)),)
