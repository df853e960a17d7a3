"""Which image URLs may be fetched: an allowlist of hosts and a strict URL check.

Images come only from hosts named in `--image-hosts` (entries `host` or `host:port`). https is
required except for loopback entries (127.0.0.0/8, ::1, localhost), which tests need. Everything
else is refused *before* any request: other hosts, IP literals that are not listed (private,
link-local, ...), other schemes (`file:`, `data:`, `ftp:`), userinfo (`user@host`), odd ports.
The URL is parsed once with yarl, the parser aiohttp itself uses, and the checked `yarl.URL` is
what gets requested, so the check and the request cannot disagree. A URL never becomes a path:
blobs are named by their sha256 only.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

import yarl

MAX_URL_LENGTH = 4096
_DEFAULT_PORTS = {"http": 80, "https": 443}


class UrlRefused(ValueError):
    """An image URL that must not be requested; `reason` says why in a few words."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"refused {url[:200]!r}: {reason}")


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


def check_url(url: str | yarl.URL, allowed: Iterable[AllowedHost]) -> yarl.URL:
    """Return the parsed URL if it may be fetched, else raise `UrlRefused` (no request made).

    Args:
        url: the URL from a record or a redirect's Location (already made absolute).
        allowed: the parsed allowlist.
    """
    text = str(url)
    if len(text) > MAX_URL_LENGTH:
        raise UrlRefused(text, f"URL longer than {MAX_URL_LENGTH} characters")
    # Spaces and non-ASCII occur in real Met paths ("ESDA Kalimian Temple.jpg", en dashes);
    # yarl percent-encodes them. Control characters and backslashes never belong in a URL.
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text) or "\\" in text:
        raise UrlRefused(text, "control characters or backslashes in URL")
    try:
        parsed = url if isinstance(url, yarl.URL) else yarl.URL(text)
        explicit_port = parsed.explicit_port
        host = parsed.raw_host
    except ValueError as exc:
        raise UrlRefused(text, f"unparseable URL ({exc})") from None
    scheme = parsed.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise UrlRefused(text, f"scheme {scheme or '(none)'!r} not allowed")
    if (
        parsed.raw_user is not None
        or parsed.raw_password is not None
        or "@" in parsed.raw_authority
    ):
        raise UrlRefused(text, "userinfo (user@host) not allowed")
    if not host:
        raise UrlRefused(text, "no host")
    host = host.lower()
    port = explicit_port if explicit_port is not None else _DEFAULT_PORTS[scheme]
    for entry in allowed:
        if entry.host != host:
            continue
        if entry.port is None and port != _DEFAULT_PORTS[scheme]:
            continue
        if entry.port is not None and entry.port != port:
            continue
        if scheme != "https" and not entry.loopback:
            raise UrlRefused(text, f"plain http to {host} (https required)")
        return parsed
    if any(entry.host == host for entry in allowed):
        raise UrlRefused(text, f"port {port} of {host} not allowed")
    kind = classify_ip(host)
    if kind is not None:
        raise UrlRefused(text, f"{kind} address {host} not in the image hosts")
    raise UrlRefused(text, f"host {host} not in the image hosts")
