"""The server's stop state, shared by the gate and the process that serves the app.

A stop signal does not cut running replies: the server drains. New work and ``/health`` are
answered 503 (a load balancer stops sending), the requests already running go on, and the
process exits once they are done or the stop timeout has passed (server/shutdown.py).
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class Drain:
    draining: bool = False
    running: int = 0  # requests with a body the gate let in that have not finished (the work)
