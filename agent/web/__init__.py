"""The web view: a read-only page that shows a graph live (``presence-agent view``, ``[view]``,
``presence-agent fleet --view``).

The package knows nothing of where graphs come from. A feed (``agent.runtime.view``:
the control socket, the in-process Presence API, or the MQTT fleet view) turns
each graph into a *page document* (:mod:`agent.web.documents`) and hands it to a
:class:`~agent.web.hub.Hub`; the :class:`~agent.web.server.ViewServer` serves the
page (``static/``, shipped in the wheel) and streams the hub's newest document to
every browser over server-sent events.

Modules, one job each:

``settings``   ``[view]`` (:class:`ViewSettings`) and the ``ADDR:PORT`` rules
``token``      the access token file ``view.token`` (0600) for non-loopback listeners
``documents``  control-socket and fleet JSON -> the page's document
``hub``        the newest document, its SSE frame, and who waits for the next one
``http``       request parsing, responses, SSE framing (no sockets)
``server``     the asyncio HTTP server: routes, token check, client cap
"""
