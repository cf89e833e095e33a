"""The benchmark suite: ``python -m bench [--quick]`` (or ``scripts/bench``).

It measures the figures of docs/PERFORMANCE.md, each against a named baseline
in the same run, writes every measured value to ``bench/results.json`` and
regenerates the page with its tables and plots. Timings are never asserted:
the tests only check that the suite runs and writes well-formed results.
"""
