"""Free TCP ports on 127.0.0.1, for the servers and multi-host jobs the tests start."""

from __future__ import annotations

import socket


def _free(port: int) -> bool:
    try:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False


def free_port(count: int = 1) -> int:
    """A port p such that p .. p + count - 1 are all free on 127.0.0.1 (a multi-host job's scheduler
    and control channel take two in a row)."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port + count <= 65535 and all(_free(port + offset) for offset in range(1, count)):
            return port
    raise RuntimeError(f"no {count} consecutive free ports")
