"""The image allowlist and URL checks, as pure unit tests: no request is ever made, and
non-loopback addresses appear only as literals given to the classifier."""

from __future__ import annotations

import json
import socket

import pytest
from harvester_support import MET_SAMPLES, samples_required

from met_harvester.images.hosts import (
    AllowedHost,
    UrlRefused,
    check_url,
    classify_ip,
    is_loopback_host,
    parse_allowlist,
)
from met_harvester.images.session import GuardedResolver

MET = parse_allowlist(["images.metmuseum.org"])
LOCAL = parse_allowlist(["127.0.0.1:8080", "localhost:9000"])


@pytest.mark.parametrize(
    ("literal", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("fc00::1", "private"),
        ("::ffff:10.0.0.1", "private"),
        ("224.0.0.1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("100.64.0.1", "reserved"),
        ("192.0.2.1", "private"),
        ("8.8.8.8", None),
        ("images.metmuseum.org", None),
    ],
)
def test_classify_ip(literal: str, kind: str | None) -> None:
    assert classify_ip(literal) == kind


def test_parse_allowlist() -> None:
    assert parse_allowlist(["Images.MetMuseum.org", " 127.0.0.1:8080 ", "[::1]:81", ""]) == (
        AllowedHost("images.metmuseum.org"),
        AllowedHost("127.0.0.1", 8080),
        AllowedHost("::1", 81),
    )
    assert (
        AllowedHost("127.0.0.1", 8080).loopback and not AllowedHost("images.metmuseum.org").loopback
    )
    assert is_loopback_host("localhost") and not is_loopback_host("example.org")
    for bad in ("https://images.metmuseum.org", "host/path", "user@host", "host:0", "host:99999"):
        with pytest.raises(ValueError):
            parse_allowlist([bad])


@pytest.mark.parametrize(
    "url",
    [
        "https://images.metmuseum.org/CRDImages/ep/web-large/DT1567.jpg",
        "https://IMAGES.metmuseum.org/CRDImages/ep/original/DT1567.jpg",
        "https://images.metmuseum.org:443/x.jpg",
        "https://images.metmuseum.org/CRDImages/es/original/ESDA Kalimian Temple.jpg",
        "https://images.metmuseum.org/CRDImages/es/original/LC-2019_66_1a–o_95-001.jpg",
    ],
)
def test_allowed_urls(url: str) -> None:
    assert check_url(url, MET).host == "images.metmuseum.org"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://images.metmuseum.org/x.jpg", "https required"),
        ("https://images.metmuseum.org:8443/x.jpg", "port 8443"),
        ("https://images.metmuseum.org.evil.example/x.jpg", "not in the image hosts"),
        ("https://images.metmuseum.org./x.jpg", "not in the image hosts"),
        ("https://evil.example/images.metmuseum.org/x.jpg", "not in the image hosts"),
        ("https://images.metmuseum.org@evil.example/x.jpg", "userinfo"),
        ("https://evil.example#@images.metmuseum.org/x.jpg", "not in the image hosts"),
        ("https://user:pw@images.metmuseum.org/x.jpg", "userinfo"),
        ("https://169.254.169.254/latest/meta-data", "link-local address"),
        ("https://10.0.0.5/x.jpg", "private address"),
        ("https://[fe80::1]/x.jpg", "link-local address"),
        ("https://127.0.0.1/x.jpg", "loopback address"),
        ("https://2130706433/x.jpg", "not in the image hosts"),
        ("file:///etc/passwd", "scheme 'file'"),
        ("data:image/png;base64,iVBORw0KGgo=", "scheme 'data'"),
        ("ftp://images.metmuseum.org/x.jpg", "scheme 'ftp'"),
        ("//images.metmuseum.org/x.jpg", "scheme"),
        ("/CRDImages/x.jpg", "scheme"),
        ("https://images.metmuseum.org\\@evil.example/x.jpg", "backslash"),
        ("https://images.metmuseum.org /x.jpg", "not in the image hosts"),
        ("https://images.metmuseum.org/x.jpg\x00.png", "control characters"),
        ("https://images.metmuseum.org/x.jpg\r\nHost: evil", "control characters"),
        ("https://images.metmuseum.org:99999/x.jpg", "unparseable"),
        ("https://images.metmuseum.org/" + "a" * 5000, "longer than"),
        ("", "scheme"),
    ],
)
def test_refused_urls(url: str, reason: str) -> None:
    with pytest.raises(UrlRefused) as info:
        check_url(url, MET)
    assert reason in info.value.reason


def test_loopback_entries_allow_plain_http_on_their_port_only() -> None:
    assert check_url("http://127.0.0.1:8080/a.jpg", LOCAL).port == 8080
    assert check_url("http://localhost:9000/a.jpg", LOCAL).port == 9000
    for url in (
        "http://127.0.0.1:8081/a.jpg",
        "http://127.0.0.1/a.jpg",
        "http://127.0.0.2:8080/a.jpg",
    ):
        with pytest.raises(UrlRefused):
            check_url(url, LOCAL)


class _FixedResolver:
    """Stands in for DNS: answers every name with the given literals (no lookups)."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = addresses

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> list[dict]:
        return [
            {"hostname": host, "host": a, "port": port, "family": family, "proto": 0, "flags": 0}
            for a in self.addresses
        ]

    async def close(self) -> None:
        pass


async def test_guarded_resolver_drops_non_public_answers() -> None:
    rebinding = GuardedResolver(MET, _FixedResolver("10.0.0.7", "169.254.169.254"))  # type: ignore[arg-type]
    with pytest.raises(OSError, match="non-public"):
        await rebinding.resolve("images.metmuseum.org", 443)
    mixed = GuardedResolver(MET, _FixedResolver("10.0.0.7", "93.184.216.34"))  # type: ignore[arg-type]
    assert [r["host"] for r in await mixed.resolve("images.metmuseum.org", 443)] == [
        "93.184.216.34"
    ]
    local = GuardedResolver(LOCAL, _FixedResolver("127.0.0.1"))  # type: ignore[arg-type]
    assert [r["host"] for r in await local.resolve("localhost", 9000)] == ["127.0.0.1"]


@samples_required(MET_SAMPLES)
def test_every_image_url_of_the_real_samples_is_allowed_by_default() -> None:
    found: list[object] = []
    for path in sorted(MET_SAMPLES.glob("objects*/*.json")):
        record = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(record, dict):
            continue
        found += [record.get("primaryImage"), record.get("primaryImageSmall")]
        found += list(record.get("additionalImages") or [])
    urls = [u for u in found if isinstance(u, str) and u]
    assert len(urls) > 20
    for url in urls:
        checked = check_url(url, MET)
        assert checked.host == "images.metmuseum.org" and checked.scheme == "https"


def test_settings_reject_a_bad_image_host() -> None:
    from pydantic import ValidationError

    from met_harvester.settings import HarvesterSettings

    assert HarvesterSettings.model_validate(
        {"image_hosts": "images.metmuseum.org, 127.0.0.1:8080"}
    ).image_hosts == ["images.metmuseum.org", "127.0.0.1:8080"]
    with pytest.raises(ValidationError, match="bare host or host:port"):
        HarvesterSettings.model_validate({"image_hosts": ["https://images.metmuseum.org/x"]})
