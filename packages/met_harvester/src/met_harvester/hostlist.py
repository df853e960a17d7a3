"""Host allowlists as the settings give them: `host`, `host:port` or `[v6]:port` entries.

Pure parsing, no feature code: `settings` validates `--image-hosts` with `parse_allowlist`, and
`images.hosts` checks URLs against the parsed entries.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

import yarl


@dataclass(frozen=True)
class AllowedHost:
    """One allowlist entry: a lowercase host name or IP literal, and an optional port."""

    host: str
    port: int | None = None

    @property
    def loopback(self) -> bool:
        """Whether the entry names the local machine (plain http is allowed there)."""
        return is_loopback_host(self.host)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port is None else f"{host}:{self.port}"


def classify_ip(host: str) -> str | None:
    """What kind of address an IP literal is, or None for a name or a public address.

    Returns one of "loopback", "private", "link-local", "multicast", "unspecified",
    "reserved" (including shared CGNAT and documentation ranges) for non-public literals.
    Pure: never resolves a name.
    """
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_private:
        return "private"
    if ip.is_reserved or not ip.is_global:
        return "reserved"
    return None


def is_loopback_host(host: str) -> bool:
    """True for `localhost` and loopback IP literals (127.0.0.0/8, ::1)."""
    return host.lower() == "localhost" or classify_ip(host) == "loopback"


def parse_allowlist(entries: Iterable[str]) -> tuple[AllowedHost, ...]:
    """Parse `--image-hosts` entries (`host`, `host:port`, `[v6]:port`).

    Raises:
        ValueError: for an entry that is not a bare host with an optional port.
    """
    parsed: list[AllowedHost] = []
    for raw in entries:
        entry = raw.strip().lower()
        if not entry:
            continue
        if any(c in entry for c in "/@?#\\ ") or "://" in entry:
            raise ValueError(f"image host {raw!r}: give a bare host or host:port, not a URL")
        try:
            url = yarl.URL(f"http://{entry}")
            host = url.raw_host
            port = url.explicit_port
        except ValueError as exc:
            raise ValueError(f"image host {raw!r}: {exc}") from None
        if not host or port == 0:
            raise ValueError(f"image host {raw!r}: not a host or host:port")
        parsed.append(AllowedHost(host.lower(), port))
    return tuple(parsed)
