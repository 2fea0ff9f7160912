"""The client's address, honouring X-Forwarded-For only from trusted proxies.

The immediate peer is the client unless it is a trusted proxy; then X-Forwarded-For is read from
the right, skipping trusted proxies, and the first untrusted address is the client. A malformed
entry stops the walk (the last trusted hop's claim cannot be checked): the peer's view wins.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def client_ip(peer: str | None, forwarded_for: Sequence[str], trusted: Sequence[Network]) -> str:
    if peer is None:
        return ""
    if not trusted or not _is_trusted(peer, trusted):
        return peer
    hops = [h.strip() for value in forwarded_for for h in value.split(",") if h.strip()]
    candidate = peer
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return candidate
        candidate = hop
        if not _is_trusted(hop, trusted):
            return hop
    return candidate


def _is_trusted(address: str, trusted: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == net.version and ip in net for net in trusted)
