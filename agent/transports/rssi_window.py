"""RSSI smoothed over a time window, robust to outliers (for BLE advertisements, as ESPresense does).

BLE RSSI jumps by 10 dB and more from one advertisement to the next (multipath, a body in the
way, the three advertising channels' different fading), which an exponential average turns into
drift. So, as ESPresense does, the value is taken over the samples of the last ``window``
seconds (15 s by default), trimmed: the **interquartile mean**, the mean of the middle half of
the sorted samples. Like the median it ignores the top and bottom quarter (a reflection, a
shadow), and averaging the middle half keeps it steady where a plain median would flip between
two neighbouring integer readings. With one to three samples it is their median.

Memory is bounded: at most ``max_samples`` (64) are kept, the oldest dropped first. Pure: the
times come in as arguments.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Final

from agent.core.distance import LinkQualityError

__all__ = ["DEFAULT_MAX_SAMPLES", "RssiWindow"]

#: Samples kept at most (an advertisement every 100 ms for 15 s would be 150; 64 is plenty).
DEFAULT_MAX_SAMPLES: Final = 64


class RssiWindow:
    """The interquartile mean of the RSSI samples of the last ``window`` seconds."""

    __slots__ = ("_samples", "max_samples", "window")

    def __init__(self, window: float, max_samples: int = DEFAULT_MAX_SAMPLES) -> None:
        if not window > 0 or max_samples < 1:
            raise LinkQualityError(f"an RSSI window of {window} s and {max_samples} samples: need both > 0")
        self.window = window
        self.max_samples = max_samples
        self._samples: deque[tuple[float, float]] = deque(maxlen=max_samples)

    def __len__(self) -> int:
        return len(self._samples)

    def add(self, now: float, rssi: float) -> None:
        """One RSSI sample (dBm) heard at ``now``."""
        if not math.isfinite(rssi):
            raise LinkQualityError(f"an RSSI of {rssi} dBm cannot be averaged")
        self._samples.append((now, rssi))

    def value(self, now: float) -> float | None:
        """The smoothed RSSI at ``now``, or ``None`` when no sample is left in the window."""
        while self._samples and self._samples[0][0] < now - self.window:
            self._samples.popleft()
        values = sorted(rssi for _, rssi in self._samples)
        n = len(values)
        if n == 0:
            return None
        middle = values[(n - 1) // 2 : n // 2 + 1] if n < 4 else values[n // 4 : n - n // 4]
        return sum(middle) / len(middle)
