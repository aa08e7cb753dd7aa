"""What protects the dashboard once other machines can reach it.

Kept free of Streamlit imports: `climb dashboard` uses `is_loopback` before it starts any server.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from typing import Callable

PASSWORD_ENV = "CLIMB_PASSWORD"


def is_loopback(address: str) -> bool:
    """True for addresses only this machine can reach. An empty address means every interface."""
    if address.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name or an empty address: reachable from elsewhere, as far as we can tell


class PasswordBackoff:
    """Wrong passwords per client address: after `free` failures each further one locks that client
    out for 2**(failures - free) seconds, at most `longest`; the right password resets the count.

    One instance serves every session of the server (module state outlives script reruns), so opening
    a new browser tab does not reset it. Only failures are remembered, so the table grows with the
    number of addresses that guessed wrong, not with traffic.
    """

    def __init__(self, free: int = 5, longest: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.free = free
        self.longest = longest
        self.clock = clock
        self._lock = threading.Lock()
        self._state: dict[str, tuple[int, float]] = {}  # client -> (failures, locked until)

    def retry_in(self, client: str) -> float:
        """Seconds until `client` may try again (0 when it may now)."""
        with self._lock:
            _, until = self._state.get(client, (0, 0.0))
        return max(0.0, until - self.clock())

    def failed(self, client: str) -> float:
        """Count a wrong password; returns the seconds `client` must now wait."""
        with self._lock:
            failures = self._state.get(client, (0, 0.0))[0] + 1
            wait = 0.0 if failures < self.free else min(self.longest, 2.0 ** (failures - self.free))
            self._state[client] = (failures, self.clock() + wait)
        return wait

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._state.pop(client, None)

    def reset(self) -> None:
        with self._lock:
            self._state.clear()


BACKOFF = PasswordBackoff()


class HideCoreEndpoints:
    """ASGI middleware answering 404 for Streamlit endpoints the dashboard does not use.

    /_stcore/metrics reports sessions and cache sizes to anyone who asks, password or not (Streamlit
    checks no credentials there and has no option to turn it off). The page itself never calls it.
    """

    HIDDEN = ("/_stcore/metrics",)

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope.get("path", "").rstrip("/").endswith(self.HIDDEN):
            await send({"type": "http.response.start", "status": 404,
                        "headers": [(b"content-type", b"text/plain; charset=utf-8")]})
            await send({"type": "http.response.body", "body": b"not found"})
            return
        await self.app(scope, receive, send)
