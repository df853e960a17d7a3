"""Fault knobs and the Imperva-like firewall of the fake Met API, plus the error pages it serves."""

from __future__ import annotations

import random
import time
from collections import deque
from dataclasses import dataclass, fields
from typing import Any, ClassVar

INCAPSULA_PAGE = (
    '<html style="height:100%"><head><META NAME="ROBOTS" CONTENT="NOINDEX, NOFOLLOW">'
    '<meta name="format-detection" content="telephone=no">\n'
    '<meta name="viewport" content="initial-scale=1.0"><meta http-equiv="X-UA-Compatible" '
    'content="IE=edge,chrome=1"></head>\n<body style="margin:0px;height:100%">\n'
    '<iframe src="/_Incapsula_Resource?CWUDNSAI=20&xinfo=5-67367335-0%200NNN%20RT%28{stamp}%2036%29'
    '&incident_id={incident}&edet=15&cinfo=03000000" frameborder=0 width="100%" height="100%" '
    'marginheight="0px" marginwidth="0px">\nRequest unsuccessful. Incapsula incident ID: {incident}'
    "</iframe>\n</body></html>"
)
SERVICE_UNAVAILABLE_PAGE = (
    '<!DOCTYPE HTML PUBLIC "-//W3C//DTD HTML 4.01//EN""http://www.w3.org/TR/html4/strict.dtd">\n'
    "<HTML><HEAD><TITLE>Service Unavailable</TITLE>\n"
    '<META HTTP-EQUIV="Content-Type" Content="text/html; charset=us-ascii"></HEAD>\n'
    "<BODY><h2>Service Unavailable</h2>\n<hr><p>HTTP Error 503. The service is unavailable.</p>\n"
    "</BODY></HTML>\n"
)
BAD_GATEWAY_PAGE = (
    '<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Strict//EN" '
    '"http://www.w3.org/TR/xhtml1/DTD/xhtml1-strict.dtd">\n<html xmlns="http://www.w3.org/1999/xhtml">'
    "<head><title>502 - Web server received an invalid response while acting as a gateway or proxy "
    "server.</title></head><body><h2>502 - Web server received an invalid response while acting as "
    "a gateway or proxy server.</h2></body></html>\n"
)
SERVER_ERROR_PAGE = (
    '<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Strict//EN" '
    '"http://www.w3.org/TR/xhtml1/DTD/xhtml1-strict.dtd">\n<html xmlns="http://www.w3.org/1999/xhtml">'
    "<head><title>500 - Internal server error.</title></head><body><h2>500 - Internal server "
    "error.</h2><h3>There is a problem with the resource you are looking for, and it cannot be "
    "displayed.</h3></body></html>\n"
)
IMAGE_NOT_FOUND_PAGE = (
    "<!DOCTYPE html><html><head><title>404 - File or directory not found.</title></head>"
    "<body><h2>404 - File or directory not found.</h2></body></html>\n"
)


def incapsula_page(rng: random.Random) -> str:
    """A block page like Imperva's, with a random incident id."""
    incident = f"{rng.randrange(10**17, 10**18)}-{rng.randrange(10**17, 10**18)}"
    return INCAPSULA_PAGE.format(incident=incident, stamp=int(time.time() * 1000))


@dataclass
class FaultConfig:
    """Fractions of API requests answered with each fault (drawn independently per request, in
    this order), plus image faults. All zero by default.

    Attributes:
        p403: 403 with the Incapsula HTML block page.
        p429: 429 JSON with a Retry-After header of `retry_after` seconds.
        p500: 500 HTML.
        p503: 503 HTML (outage).
        p_html200: The Incapsula HTML page with status 200.
        p_drop: The connection is closed without an answer.
        p_truncate: JSON body cut in half (Content-Length of the whole, then the connection closes).
        p_invalid_json: 200 with a body that is not valid JSON.
        p_html404: 404 with IIS's HTML "File or directory not found" page (record requests
            only): not the API's JSON 404, so it says nothing about the object.
        listing_truncate: Fraction of ids left out of every full `/objects` listing (drawn
            per listing) while its `total` still gives the full count.
        latency: Seconds added to every API answer.
        latency_jitter: Up to this many seconds more, uniformly at random.
        retry_after: Retry-After value for 429 answers.
        listing_faults: Whether /objects, /departments and /search also get faults (else only
            /objects/{id}).
        p_image_truncate: Image body cut short (Content-Length of the whole, then close).
        p_image_wrong_type: Image served with Content-Type text/plain.
        p_image_html: 200 with an HTML error page instead of the image.
        p_image_bomb: A small PNG declaring 40000 x 40000 pixels instead of the image.
        p_image_slow: Image streamed slowly at `image_slow_rate` bytes/s.
        image_slow_rate: Bytes per second of slow image streams.
        image_latency: Seconds added to every image answer.
        seed: Seed of the per-request fault draws.
    """

    p403: float = 0.0
    p429: float = 0.0
    p500: float = 0.0
    p503: float = 0.0
    p_html200: float = 0.0
    p_drop: float = 0.0
    p_truncate: float = 0.0
    p_invalid_json: float = 0.0
    p_html404: float = 0.0
    listing_truncate: float = 0.0
    latency: float = 0.0
    latency_jitter: float = 0.0
    retry_after: float = 1.0
    listing_faults: bool = True
    p_image_truncate: float = 0.0
    p_image_wrong_type: float = 0.0
    p_image_html: float = 0.0
    p_image_bomb: float = 0.0
    p_image_slow: float = 0.0
    image_slow_rate: float = 20_000.0
    image_latency: float = 0.0
    seed: int = 0

    API_FAULTS: ClassVar[tuple[str, ...]] = (
        "p403",
        "p429",
        "p500",
        "p503",
        "p_html200",
        "p_drop",
        "p_truncate",
        "p_invalid_json",
        "p_html404",
    )
    IMAGE_FAULTS: ClassVar[tuple[str, ...]] = (
        "p_image_truncate",
        "p_image_wrong_type",
        "p_image_html",
        "p_image_bomb",
        "p_image_slow",
    )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FaultConfig:
        """Build from a dict (e.g. an /_admin/faults body); unknown keys raise ValueError."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown fault knob(s): {', '.join(sorted(unknown))}")
        return cls(**data)

    def draw(self, rng: random.Random, names: tuple[str, ...]) -> str | None:
        """The fault to apply to one request, or None."""
        for name in names:
            p = getattr(self, name)
            if p > 0 and rng.random() < p:
                return name
        return None


@dataclass(frozen=True)
class FirewallConfig:
    """Imperva-like firewall, per client IP: more than `max_requests` API requests within any
    rolling `window` seconds blocks the client for `block` seconds. Blocked answers are a 403
    Incapsula HTML page (or, with probability `p_html200`, the same page with status 200), sent
    at once. The burst that triggered a block is forgiven with it, but with `count_blocked`
    (the default) requests made during the block count in the window, so a client that keeps
    hammering through a block is blocked again as soon as it ends.

    Attributes:
        max_requests: requests allowed in any window.
        window: rolling window in seconds (the Met's is about 30 s for ~45-100 requests).
        block: seconds a block lasts (the Met's: about 56-62 s).
        p_html200: fraction of block answers sent with status 200.
        include_images: count and block image requests too (the Met's image host is a
            separate firewall site, so off by default).
        count_blocked: requests answered with a block count in the window.
    """

    max_requests: int = 30
    window: float = 10.0
    block: float = 45.0
    p_html200: float = 0.0
    include_images: bool = False
    count_blocked: bool = True


class Firewall:
    """Per-client-IP rolling-window counter (single event loop; not thread-safe)."""

    def __init__(self, config: FirewallConfig, clock: Any = time.monotonic) -> None:
        self.config = config
        self._clock = clock
        self._seen: dict[str, deque[float]] = {}
        self._blocked_until: dict[str, float] = {}
        self.blocks = 0  # how many times a block started
        self.refused = 0  # how many requests were answered with a block

    def is_blocked(self, ip: str) -> bool:
        """Whether `ip` is blocked now (without counting a request)."""
        return self._blocked_until.get(ip, 0.0) > self._clock()

    def check(self, ip: str) -> bool:
        """Count one request from `ip`; True if it must be refused."""
        now = self._clock()
        seen = self._seen.setdefault(ip, deque())
        while seen and seen[0] <= now - self.config.window:
            seen.popleft()
        if self._blocked_until.get(ip, 0.0) > now:
            if self.config.count_blocked:
                seen.append(now)
            self.refused += 1
            return True
        seen.append(now)
        if len(seen) > self.config.max_requests:
            self._blocked_until[ip] = now + self.config.block
            seen.clear()  # the penalty absorbs the burst; what is sent during it counts anew
            self.blocks += 1
            self.refused += 1
            return True
        return False
