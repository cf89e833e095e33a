"""The atheris entry point: ``python -m tests.fuzz.run TARGET [libFuzzer options] [CORPUS_DIR...]``.

Runs one target under libFuzzer with the product's modules (and the pure-Python
decoders they call: ``tomllib``, ``json``'s Python side) instrumented for
coverage. Options are libFuzzer's (``-runs=N``, ``-max_total_time=S``,
``-timeout=S``, ``-rss_limit_mb=M``, ``-artifact_prefix=DIR/``, ``-merge=1``
...); directories are corpora, the first one grows. A file instead of a
directory replays that input (how a crash is reproduced). A finding is an
uncaught exception: libFuzzer prints it, writes the input as
``crash-<sha1>`` and exits non-zero.

``python -m tests.fuzz.run --list`` prints the target names.
"""

from __future__ import annotations

import logging
import sys

import atheris  # type: ignore[import-untyped]

#: Modules instrumented for coverage feedback (imported inside ``instrument_imports``).
INSTRUMENTED = ["agent", "tomllib", "json", "cbor2"]


def main(argv: list[str]) -> int:
    with atheris.instrument_imports(include=INSTRUMENTED):
        from tests.fuzz.targets import TARGETS
    if len(argv) < 2 or argv[1] not in TARGETS:
        if len(argv) >= 2 and argv[1] == "--list":
            print("\n".join(TARGETS))
            return 0
        print(f"usage: python -m tests.fuzz.run TARGET [libFuzzer args]; targets: {', '.join(TARGETS)}")
        return 2
    target = TARGETS[argv[1]]
    # The agent logs hostile input at most once per 10 s; a fuzzer would fill the screen.
    logging.disable(logging.CRITICAL)
    atheris.Setup([argv[0], *argv[2:]], target)
    atheris.Fuzz()
    return 0  # not reached: libFuzzer exits


if __name__ == "__main__":
    sys.exit(main(sys.argv))
