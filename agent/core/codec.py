"""Opening and verifying records, behind a Protocol the simulator replaces with a shared memo."""

from __future__ import annotations

from typing import Protocol

from agent.core.records import Envelope, Record, open_record, verify_record


class RecordCodec(Protocol):
    """Parses and verifies records. The simulator shares one memoising codec across
    all its engines, so N engines do not verify the same bytes N times."""

    def open(self, raw: bytes) -> Envelope: ...

    def verify(self, envelope: Envelope, raw: bytes) -> Record: ...


class PlainCodec:
    """The production codec: parses and verifies every time, on the raw key (nothing cached,
    so forged records from ever-new keys leave no state behind).

    The methods are the functions themselves, not wrappers: they run for every record received.
    """

    open = staticmethod(open_record)
    verify = staticmethod(verify_record)
