"""IP sets (CIDR lists, up to 100,000 entries) and the forwarded-IP configuration."""

from __future__ import annotations

import bisect
import ipaddress
from collections.abc import Iterable, Sequence
from typing import Any

from addons.waf.models import ForwardedIp

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class IpSet:
    """Merged address ranges per IP version, looked up by bisection."""

    def __init__(self, networks: Iterable[Any]) -> None:
        ranges: dict[int, list[tuple[int, int]]] = {4: [], 6: []}
        for net in networks:
            ranges[net.version].append((int(net.network_address), int(net.broadcast_address)))
        self._starts: dict[int, list[int]] = {}
        self._ends: dict[int, list[int]] = {}
        for version, items in ranges.items():
            merged: list[tuple[int, int]] = []
            for start, end in sorted(items):
                if merged and start <= merged[-1][1] + 1:
                    merged[-1] = (merged[-1][0], max(merged[-1][1], end))
                else:
                    merged.append((start, end))
            self._starts[version] = [s for s, _ in merged]
            self._ends[version] = [e for _, e in merged]

    def __contains__(self, address: str) -> bool:
        ip = parse_ip(address)
        if ip is None:
            return False
        starts = self._starts[ip.version]
        i = bisect.bisect_right(starts, int(ip)) - 1
        return i >= 0 and int(ip) <= self._ends[ip.version][i]


def parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped  # a dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d
    return ip


def _trusted(peer: str, networks: Sequence[Any]) -> bool:
    ip = parse_ip(peer)
    return ip is not None and any(ip.version == n.version and ip in n for n in networks)


def addresses_to_inspect(peer: str, header_value: str | None, cfg: ForwardedIp | None) -> list[str] | None:
    """The addresses a statement inspects; None when the forwarded header is absent (AWS WAF then
    does not apply the statement at all)."""
    if cfg is None:
        return [peer]
    if cfg.trusted_proxies and not _trusted(peer, cfg.trusted_proxies):
        return [peer]  # an untrusted peer's forwarded header is not believed: judge the peer itself
    if header_value is None:
        return None
    parts = [p.strip() for p in header_value.split(",")]
    if cfg.position == "first":
        return parts[:1]
    if cfg.position == "last":
        return parts[-1:]
    return parts[-10:]
