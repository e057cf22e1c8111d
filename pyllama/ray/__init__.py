"""pyllama's server as Ray Serve replicas behind one endpoint, routed by prompt prefix (extra ``[ray]``).

routing.py and keys.py are plain Python (the policy and the key it reads); the modules that run
under Ray import it themselves, so importing this package does not.
"""

from __future__ import annotations

from typing import Any

__all__ = ["build_app"]


def __getattr__(name: str) -> Any:
    if name == "build_app":  # ``serve run pyllama.ray:build_app``
        from .app import build_app

        return build_app
    raise AttributeError(f"module 'pyllama.ray' has no attribute {name!r}")
