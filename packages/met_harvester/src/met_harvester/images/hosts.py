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

from collections.abc import Iterable

import yarl

from met_harvester.hostlist import AllowedHost, classify_ip, is_loopback_host, parse_allowlist

MAX_URL_LENGTH = 4096
_DEFAULT_PORTS = {"http": 80, "https": 443}

__all__ = [
    "AllowedHost",
    "UrlRefused",
    "check_url",
    "classify_ip",
    "is_loopback_host",
    "parse_allowlist",
]


class UrlRefused(ValueError):
    """An image URL that must not be requested; `reason` says why in a few words."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"refused {url[:200]!r}: {reason}")


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
