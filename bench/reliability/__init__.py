"""The reliability script: each hostile scenario of issue 13 against real agent processes.

``python -m bench.reliability [--quick] [--only NAMES]`` (or ``scripts/reliability``)
starts ``presence-agent run`` processes on loopback, attacks them as a LAN
neighbour, an admitted peer or a local user would, measures each scenario's
figure (RSS, control-socket latency, fds, threads, rejoin and join times, link
drops, lost writes, reused counters) and regenerates ``docs/RELIABILITY.md``
with its plots. One module per scenario family:

- :mod:`bench.reliability.floods`: forged records, fresh-key beacons and a Sybil
  flood of genuine cards (scenarios ``forged``, ``beacons``, ``sybil``);
- :mod:`bench.reliability.links`: unauthenticated connections against a
  restarting peer and hostile admitted links at a bridge (``connections``,
  ``hostile_links``);
- :mod:`bench.reliability.clients`: idle control clients and ``watch`` cycles
  (``control``);
- :mod:`bench.reliability.joining`: a fresh peer joining a mesh that holds 16 MB
  (``big_join``);
- :mod:`bench.reliability.crashes`: kill -9 during metadata writes (``kill9``).

Figures, not timed assertions: a goal missed is reported as missed, never
raised. :mod:`bench.reliability.common` holds the shared pieces (plans,
samplers, identities), :mod:`bench.reliability.peer` the hostile peer built on
the project's codec, :mod:`bench.reliability.report` the page.
"""
