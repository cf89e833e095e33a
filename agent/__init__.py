"""presence-agent: a signed, link-state presence mesh for field hardware.

The pure protocol lives in :mod:`agent.core`; :mod:`agent.api` is the public
Presence API; :mod:`agent.state` persists identity and records; :mod:`agent.sim`
drives many engines on a virtual clock.
"""

__version__ = "0.1.0"
