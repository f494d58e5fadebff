"""Ports for the servers tests start as subprocesses: chosen now, bound by the server later.

A port the kernel hands out for `bind(("127.0.0.1", 0))` comes from the ephemeral range, where
every outgoing connection also gets its local port: in the second a server takes to start, one
of the suite's many client connections could take the port first, and the server would fail to
bind it. These ports come from below that range, where no connection's local port lands; each is
handed out once per process and was free when chosen.
"""

from __future__ import annotations

import random
import socket

RANGE_PATH = "/proc/sys/net/ipv4/ip_local_port_range"
#: The lowest port handed out (well above the well-known and registered services' usual ports).
LOWEST = 10_000
_handed_out: set[int] = set()


def _ephemeral_low() -> int:
    try:
        with open(RANGE_PATH, encoding="ascii") as ports:
            return int(ports.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def _kernel_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A port on 127.0.0.1 that nothing uses now and no outgoing connection will take."""
    high = _ephemeral_low() - 1
    if high - LOWEST < 1000:  # an unusual range: the kernel's choice is all there is
        return _kernel_port()
    for _ in range(200):
        port = random.randint(LOWEST, high)
        if port not in _handed_out and _bindable(port):
            _handed_out.add(port)
            return port
    return _kernel_port()
