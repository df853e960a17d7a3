"""The image pool's HTTP session: its own connector, DNS that refuses non-public answers for
non-loopback hosts, no automatic redirects and no decompression."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from met_harvester.images.hosts import AllowedHost, classify_ip

if TYPE_CHECKING:
    from met_harvester.settings import HarvesterSettings


class GuardedResolver(AbstractResolver):
    """DNS that refuses non-public answers for non-loopback hosts (DNS rebinding guard).

    An allowed host name must not resolve to a private, loopback or link-local address unless
    the allowlist entry itself is a loopback one. IP literals never reach a resolver.
    """

    def __init__(
        self, allowed: tuple[AllowedHost, ...], inner: AbstractResolver | None = None
    ) -> None:
        self._allowed = allowed
        self._inner = inner if inner is not None else DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """Resolve `host`, dropping non-public addresses unless the host is a loopback entry."""
        results = await self._inner.resolve(host, port, family)
        if any(a.host == host.lower() and a.loopback for a in self._allowed):
            return results
        public = [r for r in results if classify_ip(r["host"]) is None]
        if not public:
            raise OSError(f"image host {host} resolves only to non-public addresses")
        return public

    async def close(self) -> None:
        """Close the inner resolver."""
        await self._inner.close()


def make_session(
    settings: HarvesterSettings, allowed: tuple[AllowedHost, ...]
) -> aiohttp.ClientSession:
    """The one session of the image pool: its own connector, guarded DNS, no auto-redirects."""
    connector = aiohttp.TCPConnector(
        limit=settings.image_concurrency,
        limit_per_host=settings.image_concurrency,
        resolver=GuardedResolver(allowed),
        ttl_dns_cache=300,
    )
    timeout = aiohttp.ClientTimeout(
        total=None, sock_connect=settings.timeout, sock_read=settings.timeout
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        # identity: bodies are stored byte for byte, never a gzip of them (no auto-decompress)
        headers={
            "User-Agent": settings.user_agent,
            "Accept": "image/*",
            "Accept-Encoding": "identity",
        },
        auto_decompress=False,
        trust_env=False,
    )
