"""Every fuzz target by name (each module's docstring states its targets' contracts)."""

from __future__ import annotations

from typing import Final

from . import (
    target_config,
    target_control,
    target_engine,
    target_identity,
    target_lan,
    target_mqtt,
    target_records,
    target_store,
    target_wire,
)
from .contract import Target

TARGETS: Final[dict[str, Target]] = {
    target.name: target
    for module in (
        target_wire,
        target_records,
        target_store,
        target_engine,
        target_lan,
        target_control,
        target_config,
        target_identity,
        target_mqtt,
    )
    for target in module.TARGETS
}
