"""The stack's TCP ports: each service keeps its port across `down` and crashes (`ports.json`),
so image URIs, build records and deployed functions stay valid."""

from __future__ import annotations

import hashlib
import json
import socket

from build_assets.errors import UserError
from build_assets.stack.processes import wait_for
from build_assets.stack.services import Service
from build_assets.stack.state import Layout


def bindable(port: int) -> int | None:
    """`port` (0: any) if it can be bound on 127.0.0.1 as our servers bind (SO_REUSEADDR, so a
    closed server's TIME-WAIT connections do not count); else None."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return None
        return s.getsockname()[1]


# Kept ports come from below the kernel's ephemeral range (32768-60999 by default): a port
# picked there (`bind(0)`) can be handed to some outgoing connection while the stack is down,
# and the server could not have its address back.
STABLE_PORTS = range(20000, 32000)
PORT_RELEASE_S = 3.0  # how long a kept port may take to be released by a stopped server


def stable_port(layout: Layout, name: str, taken: set[int]) -> int:
    """A free port outside the ephemeral range, the same first choice for the same stack
    folder and service (probing upward from a hash of both)."""
    digest = hashlib.sha256(f"{layout.home}\0{name}".encode()).digest()
    start = int.from_bytes(digest[:4], "big") % len(STABLE_PORTS)
    for i in range(len(STABLE_PORTS)):
        port = STABLE_PORTS[(start + i) % len(STABLE_PORTS)]
        if port not in taken and bindable(port) is not None:
            return port
    raise UserError(
        f"no free TCP port on 127.0.0.1 in {STABLE_PORTS.start}-{STABLE_PORTS.stop - 1}"
    )


def kept_port(layout: Layout, name: str, old: Service | None) -> int:
    """The port `name` had before (state.json, else ports.json), recorded; a new one if none."""
    try:
        kept = json.loads(layout.ports.read_text())
    except (OSError, ValueError):
        kept = {}
    preferred = (old.port if old else None) or kept.get(name)
    if preferred:
        # a server stopped a moment ago may still hold its port while the kernel closes its
        # sockets (seen: refused, then free 0.1 s later): only a port still taken is an error
        if not wait_for(lambda: bindable(int(preferred)) is not None, PORT_RELEASE_S):
            raise UserError(
                f"{name}: port 127.0.0.1:{preferred}, kept so image and function URIs stay"
                f" valid, is taken by another process: stop it (ss -ltnp 'sport = :{preferred}'),"
                f" or delete {layout.ports} to move the stack to new ports"
            )
        port = int(preferred)
    else:
        port = stable_port(layout, name, taken=set(kept.values()))
    kept[name] = port
    tmp = layout.ports.with_suffix(".tmp")
    tmp.write_text(json.dumps(kept, indent=2, sort_keys=True) + "\n")
    tmp.replace(layout.ports)
    return port
