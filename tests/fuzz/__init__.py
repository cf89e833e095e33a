"""Coverage-guided fuzzing of every decoder that reads bytes or text from outside (atheris).

``targets`` holds the registry (name -> :class:`~tests.fuzz.contract.Target`);
each target module states its contract in its docstring. ``run`` is the atheris
entry point, ``seeds`` regenerates the committed corpus in ``corpus/<target>/``.
See docs/ARCHITECTURE.md ("Fuzzing").

Nothing here may import ``agent`` at package import time: ``run`` imports the
targets inside ``atheris.instrument_imports()`` so the product's modules are
instrumented for coverage, which only works for modules not yet imported.
"""
