"""The fake Met API over real loopback HTTP: records, listing, errors, mutation, faults, firewall,
images and their ground truth."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from harvester_support import MET_SAMPLES, FakeApiFactory, samples_required
from PIL import Image

from met_harvester.testing import (
    CLASSIFICATIONS,
    LARGE_IMAGE_OBJECT_ID,
    TAG_VOCAB,
    CollectionConfig,
    FakeMetAPI,
    FaultConfig,
    FirewallConfig,
    SyntheticCollection,
)
from met_harvester.testing.render import MOTIFS, render_scene
from met_harvester.testing.runner import run_fake_api
from met_harvester.testing.vocab import RECORD_KEYS

ISO_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,3})?Z$")
TEXT_KEYS = [k for k in RECORD_KEYS if k not in {
    "objectID", "isHighlight", "isPublicDomain", "additionalImages", "constituents",
    "objectBeginDate", "objectEndDate", "measurements", "tags", "isTimelineWork",
}]  # fmt: skip


async def get(session: aiohttp.ClientSession, url: str, **kw: Any) -> tuple[int, str, Any]:
    async with session.get(url, **kw) as r:
        return r.status, r.headers.get("Content-Type", ""), await r.read()


async def listing(session: aiohttp.ClientSession, api: FakeMetAPI, query: str = "") -> list[int]:
    status, _, body = await get(session, f"{api.api_url}/objects{query}")
    assert status == 200
    data = json.loads(body)
    assert data["total"] == len(data["objectIDs"])
    return list(data["objectIDs"])


# ----- records and listing ------------------------------------------------------------------------
async def test_listing_filters_and_order(fake_api: FakeMetAPI) -> None:
    coll = fake_api.collection
    async with aiohttp.ClientSession() as s:
        first = await listing(s, fake_api)
        second = await listing(s, fake_api)
        assert sorted(first) == sorted(second) == list(coll.object_ids)
        assert first != second  # order is not stable, like the Met's
        ids = sorted(first)
        assert len(ids) == 200 and ids[-1] - ids[0] + 1 > len(ids)  # not contiguous
        since = dt.date(2023, 1, 1)
        recent = await listing(s, fake_api, f"?metadataDate={since}")
        records = {}
        for oid in ids:
            _, _, body = await get(s, f"{fake_api.api_url}/objects/{oid}")
            records[oid] = json.loads(body)
        expected = {i for i, r in records.items() if r["metadataDate"][:10] >= str(since)}
        assert set(recent) == expected and 0 < len(expected) < len(ids)
        dates = {r["metadataDate"][:10] for r in records.values()}
        assert len(dates) > 100  # day-varying
        by_dept = await listing(s, fake_api, "?departmentIds=11|9")
        names = {"European Paintings", "Drawings and Prints"}
        assert set(by_dept) == {i for i, r in records.items() if r["department"] in names}
        both = await listing(s, fake_api, f"?departmentIds=11|9&metadataDate={since}")
        assert set(both) == set(by_dept) & expected
        assert await listing(s, fake_api, "?departmentIds=999") == []
        assert sorted(await listing(s, fake_api, "?metadataDate=")) == ids


@samples_required(MET_SAMPLES / "objects")
async def test_record_shape_like_real_samples(fake_api: FakeMetAPI) -> None:
    samples = sorted((MET_SAMPLES / "objects").glob("*.json"))
    real = json.loads((MET_SAMPLES / "objects" / "352204.json").read_text())
    assert all(set(json.loads(p.read_text())) == set(real) for p in samples)
    seen = {"null_tags": 0, "tags": 0, "female": 0, "not_pd": 0, "additional": 0, "constituents": 0}
    async with aiohttp.ClientSession() as s:
        for oid in fake_api.collection.object_ids:
            status, ctype, body = await get(s, f"{fake_api.api_url}/objects/{oid}")
            assert status == 200 and ctype == "application/json" and body.endswith(b"}\n")
            rec = json.loads(body)
            assert list(rec) == list(real)  # the real 57 keys in the real order
            assert rec["objectID"] == oid and ISO_Z.match(rec["metadataDate"])
            assert all(isinstance(rec[k], str) for k in TEXT_KEYS)
            assert isinstance(rec["objectBeginDate"], int) and isinstance(
                rec["isPublicDomain"], bool
            )
            if rec["tags"] is None:
                seen["null_tags"] += 1
            else:
                seen["tags"] += 1
                assert 1 <= len(rec["tags"]) <= 3
                for tag in rec["tags"]:
                    assert set(tag) == set(real["tags"][0]) and tag["term"] in TAG_VOCAB
                    assert tag["AAT_URL"].startswith("http://vocab.getty.edu/page/")
                    assert tag["Wikidata_URL"].startswith("https://www.wikidata.org/wiki/Q")
            if rec["constituents"]:
                seen["constituents"] += 1
                assert all(set(c) == set(real["constituents"][0]) for c in rec["constituents"])
                seen["female"] += any(c["gender"] == "Female" for c in rec["constituents"])
            if not rec["isPublicDomain"]:
                seen["not_pd"] += 1
                assert rec["primaryImage"] == rec["primaryImageSmall"] == ""
                assert rec["additionalImages"] == []
            else:
                assert rec["primaryImageSmall"].startswith(fake_api.base_url + "/images/small/")
                seen["additional"] += bool(rec["additionalImages"])
            assert rec["classification"] in CLASSIFICATIONS
    assert all(v > 0 for v in seen.values()), seen
    assert 0.1 < seen["not_pd"] / 200 < 0.3


async def test_departments_and_search(fake_api: FakeMetAPI) -> None:
    async with aiohttp.ClientSession() as s:
        status, _, body = await get(s, f"{fake_api.api_url}/departments")
        assert status == 200
        depts = json.loads(body)["departments"]
        if (MET_SAMPLES / "departments.json").exists():
            assert (
                depts == json.loads((MET_SAMPLES / "departments.json").read_text())["departments"]
            )
        status, _, body = await get(s, f"{fake_api.api_url}/search", params={"q": "Horses"})
        hits = json.loads(body)["objectIDs"]
        coll = fake_api.collection
        assert hits and all("Horses" in (coll.tags_of(i) or []) for i in hits)
        _, _, body = await get(s, f"{fake_api.api_url}/search", params={"q": "zebra"})
        assert json.loads(body) == {"total": 0, "objectIDs": None}
        status, ctype, _ = await get(s, f"{fake_api.api_url}/search")
        assert status == 502 and ctype.startswith("text/html")


def test_determinism_and_scale() -> None:
    a = SyntheticCollection(CollectionConfig(n_objects=300, seed=5))
    b = SyntheticCollection(CollectionConfig(n_objects=300, seed=5))
    c = SyntheticCollection(CollectionConfig(n_objects=300, seed=6))
    assert a.object_ids == b.object_ids != c.object_ids
    for oid in a.object_ids[:20]:
        assert a.record(oid, "http://x") == b.record(oid, "http://x")
        assert a.image_bytes(oid, "small") == b.image_bytes(oid, "small")
        assert a.truth(oid) == b.truth(oid)
    common = sorted(set(a.object_ids) & set(c.object_ids))[:20]
    assert any(a.record(i, "http://x") != c.record(i, "http://x") for i in common)
    big = SyntheticCollection(CollectionConfig(n_objects=500_000, seed=1))
    assert len(big.object_ids) == 500_000 and big.object_ids[-1] > 500_000
    last = big.object_ids[-2]
    assert big.record(last, "http://x")["objectID"] == last
    assert len(big.list_ids(dt.date(2026, 1, 1))) < 500_000


async def test_500k_objects_served(fake_api_factory: FakeApiFactory) -> None:
    api = await fake_api_factory(n_objects=500_000, seed=3)
    async with aiohttp.ClientSession() as s:
        ids = await listing(s, api, "?metadataDate=2026-06-01")
        assert 0 < len(ids) < 500_000
        status, _, body = await get(s, f"{api.api_url}/objects/{ids[0]}")
        assert status == 200 and json.loads(body)["objectID"] == ids[0]


# ----- errors -------------------------------------------------------------------------------------
async def test_error_answers_like_the_met(fake_api: FakeMetAPI) -> None:
    api, coll = fake_api, fake_api.collection
    gone = coll.object_ids[3]
    api.remove_object(gone)
    missing = next(i for i in range(1, 10_000) if not coll.exists(i))
    async with aiohttp.ClientSession() as s:
        cases = {
            f"/objects/{missing}": (404, {"message": "ObjectID not found"}),
            "/objects/0": (404, {"message": "ObjectID not found"}),
            "/objects/-1": (404, {"message": "ObjectID not found"}),
            f"/objects/{gone}": (404, {"message": "Not a valid object"}),
            "/objects/abc": (400, {"message": "could not parse objectID"}),
            "/objects/336228.5": (400, {"message": "could not parse objectID"}),
            "/objects/": (404, {"message": "Not Found"}),
        }
        for path, (code, message) in cases.items():
            status, ctype, body = await get(s, api.api_url + path)
            assert (status, json.loads(body)) == (code, message), path
            assert ctype == "application/json" and body.endswith(b"\n")
        for bad in ("2023-13-01", "2023-02-30", "01-01-2023", "notadate"):
            status, _, body = await get(s, f"{api.api_url}/objects?metadataDate={bad}")
            assert status == 400
            assert json.loads(body) == (
                "Date not valid. Dates must be in the format YYYY-MM-DD e.g. 1987-05-03"
            )
        status, ctype, _ = await get(s, f"{api.api_url}/objects?departmentIds=abc")
        assert status == 502 and ctype.startswith("text/html")
        async with s.head(f"{api.api_url}/objects/{coll.object_ids[0]}") as r:
            assert r.status == 405 and r.headers["Allow"] == "OPTIONS, GET"


# ----- mutation -----------------------------------------------------------------------------------
async def test_mutation_add_remove_in_process(fake_api: FakeMetAPI) -> None:
    api = fake_api
    today = dt.datetime.now(dt.UTC).date()
    oid = api.collection.object_ids[10]
    async with aiohttp.ClientSession() as s:
        assert await listing(s, api, f"?metadataDate={today}") == []
        _, _, before = await get(s, f"{api.api_url}/objects/{oid}")
        api.mutate(oid, title="A New Title", newField=[1, 2])
        _, _, after = await get(s, f"{api.api_url}/objects/{oid}")
        rec = json.loads(after)
        assert rec["title"] == "A New Title" and rec["newField"] == [1, 2]
        assert rec["metadataDate"][:10] == str(today) > json.loads(before)["metadataDate"][:10]
        new = api.add_object()
        assert sorted(await listing(s, api, f"?metadataDate={today}")) == sorted([oid, new])
        status, _, body = await get(s, f"{api.api_url}/objects/{new}")
        assert status == 200 and json.loads(body)["objectID"] == new
        api.remove_object(oid)
        assert oid not in await listing(s, api)
        assert new in await listing(s, api)
        status, _, body = await get(s, f"{api.api_url}/objects/{oid}")
        assert status == 404 and json.loads(body)["message"] == "Not a valid object"
        with pytest.raises(ValueError):
            api.add_object(new)


async def test_admin_endpoints(fake_api: FakeMetAPI) -> None:
    api = fake_api
    oid = api.collection.object_ids[0]
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{api.base_url}/_admin/objects/{oid}/mutate", json={"title": "T2"}) as r:
            assert r.status == 200
        _, _, body = await get(s, f"{api.api_url}/objects/{oid}")
        assert json.loads(body)["title"] == "T2"
        async with s.post(f"{api.base_url}/_admin/objects", json={}) as r:
            new = (await r.json())["object_id"]
        assert new in await listing(s, api)
        async with s.post(f"{api.base_url}/_admin/objects/{new}/remove") as r:
            assert r.status == 200
        assert new not in await listing(s, api)
        async with s.post(f"{api.base_url}/_admin/objects/999999999/remove") as r:
            assert r.status == 404
        async with s.post(f"{api.base_url}/_admin/faults", json={"p503": 1.0}) as r:
            assert r.status == 200
        status, _, _ = await get(s, f"{api.api_url}/objects/{oid}")
        assert status == 503
        async with s.post(f"{api.base_url}/_admin/faults", json={"p_nonsense": 1}) as r:
            assert r.status == 400
        async with s.post(f"{api.base_url}/_admin/faults", json={}) as r:
            assert r.status == 200
        async with s.get(f"{api.base_url}/_admin/requests", params={"prefix": "/objects/"}) as r:
            count = (await r.json())["count"]
        assert count == api.count("/objects/") == 2
        async with s.get(f"{api.base_url}/_admin/stats") as r:
            stats = await r.json()
        assert stats["objects"] == 200 and stats["record_fetches"] == 2


async def test_request_log(fake_api: FakeMetAPI) -> None:
    async with aiohttp.ClientSession() as s:
        await get(s, f"{fake_api.api_url}/objects", params={"departmentIds": "11"})
        await get(s, f"{fake_api.api_url}/objects/0")
    first, second = fake_api.requests[-2:]
    assert (first.method, first.path, first.query, first.status) == (
        "GET", "/public/collection/v1/objects", "departmentIds=11", 200,
    )  # fmt: skip
    assert second.status == 404 and second.client_ip == "127.0.0.1" and second.time >= first.time
    assert fake_api.count("/objects") == 2 and fake_api.count("/objects/") == 1
    assert fake_api.fetched_ids() == {0: 1}


# ----- faults -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("knob", "status", "marker"),
    [
        ("p403", 403, b"Incapsula incident ID"),
        ("p429", 429, b"Too Many Requests"),
        ("p500", 500, b"500 - Internal server error"),
        ("p503", 503, b"Service Unavailable"),
        ("p_html200", 200, b"Incapsula incident ID"),
        ("p_invalid_json", 200, b""),
    ],
)
async def test_api_fault_answers(
    fake_api_factory: FakeApiFactory, knob: str, status: int, marker: bytes
) -> None:
    api = await fake_api_factory(
        n_objects=20, faults=FaultConfig.from_dict({knob: 1.0, "retry_after": 7})
    )
    oid = api.collection.object_ids[0]
    async with aiohttp.ClientSession() as s, s.get(f"{api.api_url}/objects/{oid}") as r:
        body = await r.read()
        assert r.status == status and marker in body
        if knob == "p429":
            assert r.headers["Retry-After"] == "7"
        if knob in ("p403", "p_html200", "p500", "p503"):
            assert r.headers["Content-Type"].startswith("text/html")
        if knob == "p_invalid_json":
            with pytest.raises(json.JSONDecodeError):
                json.loads(body)
    assert api.requests[-1].fault == knob


async def test_dropped_and_truncated(fake_api_factory: FakeApiFactory) -> None:
    api = await fake_api_factory(n_objects=20, faults=FaultConfig(p_drop=1.0))
    url = f"{api.api_url}/objects/{api.collection.object_ids[0]}"
    async with aiohttp.ClientSession() as s:
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await get(s, url)
        api.set_faults(FaultConfig(p_truncate=1.0))
        with pytest.raises(aiohttp.ClientPayloadError):
            await get(s, url)
        api.set_faults(FaultConfig(p_truncate=1.0, listing_faults=False))
        assert len(await listing(s, api)) == 20  # listing spared
        api.set_faults(None)
        assert (await get(s, url))[0] == 200
    assert {"p_drop", "p_truncate"} <= {r.fault for r in api.requests}


async def test_fault_fractions_and_latency(fake_api_factory: FakeApiFactory) -> None:
    faults = FaultConfig(p500=0.3, latency=0.02, seed=1)
    api = await fake_api_factory(n_objects=20, faults=faults)
    url = f"{api.api_url}/objects/{api.collection.object_ids[0]}"
    async with aiohttp.ClientSession() as s:
        started = time.monotonic()
        statuses = [(await get(s, url))[0] for _ in range(60)]
        elapsed = time.monotonic() - started
    assert set(statuses) == {200, 500} and 6 <= statuses.count(500) <= 32
    assert elapsed >= 60 * 0.02  # every answer waited at least the added latency


async def test_firewall_blocks_per_ip_then_lifts(fake_api_factory: FakeApiFactory) -> None:
    api = await fake_api_factory(
        n_objects=20, firewall=FirewallConfig(max_requests=20, window=5.0, block=0.5)
    )
    url = f"{api.api_url}/objects/{api.collection.object_ids[0]}"
    hammer = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
    other = aiohttp.TCPConnector(local_addr=("127.0.0.3", 0))
    async with (
        aiohttp.ClientSession(connector=hammer) as s,
        aiohttp.ClientSession(connector=other) as s2,
    ):
        answers = [await get(s, url) for _ in range(25)]
        assert [a[0] for a in answers] == [200] * 20 + [403] * 5
        assert b"Request unsuccessful. Incapsula incident ID" in answers[-1][2]
        assert answers[-1][1].startswith("text/html")
        assert (await get(s2, url))[0] == 200  # another client is not blocked
        assert (await get(s, f"{api.base_url}/_admin/stats"))[0] == 200  # admin never blocked
        await asyncio.sleep(0.6)
        assert (await get(s, url))[0] == 200  # block lifted
    assert api.firewall is not None and api.firewall.blocks == 1
    assert {r.client_ip for r in api.requests} >= {"127.0.0.2", "127.0.0.3"}


async def test_firewall_html200_and_images(fake_api_factory: FakeApiFactory) -> None:
    firewall = FirewallConfig(max_requests=2, window=5.0, block=5.0, p_html200=1.0)
    api = await fake_api_factory(n_objects=20, firewall=firewall)
    coll = api.collection
    oid = next(i for i in coll.object_ids if coll.is_public_domain(i))
    image = f"{api.base_url}/images/small/{oid}.{coll.image_spec(oid).ext}"
    async with aiohttp.ClientSession() as s:
        answers = [await get(s, f"{api.api_url}/objects/{oid}") for _ in range(3)]
        assert [a[0] for a in answers] == [200, 200, 200]
        assert b"Incapsula incident ID" in answers[2][2] and answers[2][1].startswith("text/html")
        assert (await get(s, image))[0] == 200  # images are a separate site by default
        api.set_firewall(replace(firewall, include_images=True, p_html200=0.0))
        assert [(await get(s, image))[0] for _ in range(3)] == [200, 200, 403]


# ----- images -------------------------------------------------------------------------------------
def _decode(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


async def test_images_decode_with_claimed_formats(fake_api_factory: FakeApiFactory) -> None:
    api = await fake_api_factory(n_objects=120, seed=2)
    coll = api.collection
    formats, modes, progressive = set(), set(), 0
    async with aiohttp.ClientSession() as s:
        for oid in coll.object_ids[:120]:
            _, _, body = await get(s, f"{api.api_url}/objects/{oid}")
            rec = json.loads(body)
            if not rec["isPublicDomain"] or oid == LARGE_IMAGE_OBJECT_ID:
                continue
            spec = coll.image_spec(oid)
            status, ctype, small = await get(s, rec["primaryImageSmall"])
            assert status == 200 and ctype == spec.content_type
            img = _decode(small)
            assert (img.format, img.mode, img.size) == (spec.fmt, spec.mode, spec.small)
            assert 200 <= max(img.size) <= 400
            formats.add(img.format)
            modes.add(img.mode)
            progressive += bool(img.info.get("progressive"))
            for url in rec["additionalImages"]:
                status, _, extra = await get(s, url)
                assert status == 200 and _decode(extra).format == spec.fmt
        with_images = [
            i for i in coll.object_ids if coll.is_public_domain(i) and i != LARGE_IMAGE_OBJECT_ID
        ]
        oid = with_images[0]
        spec = coll.image_spec(oid)
        _, _, original = await get(s, f"{api.base_url}/images/original/{oid}.{spec.ext}")
        assert (
            _decode(original).size == spec.original
            and 2 <= spec.original[0] / spec.small[0] <= 4.01
        )
        not_pd = next(i for i in coll.object_ids if not coll.is_public_domain(i))
        assert (await get(s, f"{api.base_url}/images/small/{not_pd}.jpg"))[0] == 404
        assert (await get(s, f"{api.base_url}/images/small/nope.jpg"))[0] == 404
    assert formats == {"JPEG", "PNG"} and modes == {"RGB", "L", "CMYK"} and progressive > 0


async def test_large_image(fake_api: FakeMetAPI) -> None:
    coll = fake_api.collection
    assert LARGE_IMAGE_OBJECT_ID in coll.object_ids
    async with aiohttp.ClientSession() as s:
        _, _, body = await get(s, f"{fake_api.api_url}/objects/{LARGE_IMAGE_OBJECT_ID}")
        status, ctype, data = await get(s, json.loads(body)["primaryImage"])
    img = Image.open(io.BytesIO(data))
    assert (
        status == 200 and ctype == "image/jpeg" and img.format == "JPEG" and max(img.size) >= 6000
    )


async def test_conditional_requests_and_new_images(fake_api: FakeMetAPI) -> None:
    coll = fake_api.collection
    oid = next(i for i in coll.object_ids if coll.is_public_domain(i))
    async with aiohttp.ClientSession() as s:
        _, _, body = await get(s, f"{fake_api.api_url}/objects/{oid}")
        url = json.loads(body)["primaryImageSmall"]
        async with s.get(url) as r:
            etag, modified, first = r.headers["ETag"], r.headers["Last-Modified"], await r.read()
        async with s.get(url, headers={"If-None-Match": etag}) as r:
            assert r.status == 304 and await r.read() == b""
        async with s.get(url, headers={"If-Modified-Since": modified}) as r:
            assert r.status == 304
        async with s.get(url, headers={"If-None-Match": '"other"'}) as r:
            assert r.status == 200 and await r.read() == first
        fake_api.change_image(oid)
        _, _, body = await get(s, f"{fake_api.api_url}/objects/{oid}")
        new_url = json.loads(body)["primaryImageSmall"]
        assert new_url != url
        async with s.get(new_url, headers={"If-None-Match": etag}) as r:
            assert r.status == 200 and r.headers["ETag"] != etag and await r.read() != first
        assert (await get(s, url))[0] == 200  # the old URL still answers


@pytest.mark.parametrize(
    "knob",
    ["p_image_truncate", "p_image_wrong_type", "p_image_html", "p_image_bomb", "p_image_slow"],
)
async def test_image_faults(fake_api_factory: FakeApiFactory, knob: str) -> None:
    faults = FaultConfig.from_dict({knob: 1.0, "image_slow_rate": 200_000})
    api = await fake_api_factory(n_objects=30, faults=faults)
    coll = api.collection
    oid = next(
        i for i in coll.object_ids if coll.is_public_domain(i) and coll.image_spec(i).fmt == "JPEG"
    )
    good, _ = coll.image_bytes(oid, "small")
    async with aiohttp.ClientSession() as s:
        url = f"{api.base_url}/images/small/{oid}.jpg"
        if knob == "p_image_truncate":
            with pytest.raises(aiohttp.ClientPayloadError):
                await get(s, url)
            return
        status, ctype, data = await get(s, url)
    assert status == 200
    if knob == "p_image_wrong_type":
        assert ctype.startswith("text/plain") and data == good
    elif knob == "p_image_html":
        assert ctype.startswith("text/html") and b"<html" in data.lower()
    elif knob == "p_image_bomb":
        with pytest.raises(Image.DecompressionBombError):
            Image.open(io.BytesIO(data))
        assert len(data) < 1_000_000
    else:
        assert data == good and ctype == "image/jpeg"
    assert api.requests[-1].fault == knob


# ----- ground truth -------------------------------------------------------------------------------
def test_truth_boxes_hold_the_motifs() -> None:
    coll = SyntheticCollection(CollectionConfig(n_objects=100, seed=4, large_image=False))
    checked = 0
    for oid in coll.object_ids:
        truth = coll.truth(oid)
        assert truth["classification"] == coll.classification_of(oid)
        assert set(truth["boxes"]) == set(truth["tags"])
        spec = coll.image_spec(oid)
        if spec.mode != "RGB" or not truth["tags"]:
            continue
        img = np.asarray(_decode(coll.image_bytes(oid, "small")[0]).convert("RGB"), np.int32)
        h, w = img.shape[:2]
        outside = np.ones((h, w), dtype=bool)
        for x0, y0, x1, y1 in truth["boxes"].values():
            outside[int(y0 * h) : int(y1 * h) + 1, int(x0 * w) : int(x1 * w) + 1] = False
        for tag, (x0, y0, x1, y1) in truth["boxes"].items():
            assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
            side = (x1 - x0) * w / min(w, h)
            assert 0.19 <= side <= 0.31  # 20–30% of the short side
            near = np.abs(img - np.array(MOTIFS[tag][1])).sum(axis=-1) < 90
            inside = near[int(y0 * h) : int(y1 * h), int(x0 * w) : int(x1 * w)].mean()
            assert inside > 0.1, (oid, tag, inside)  # the motif is in its box
            assert near[outside].mean() < 0.02, (oid, tag)  # and its colour nowhere else
        checked += 1
    assert checked > 40


def test_tint_rates_and_motifs_tint_independent() -> None:
    def rates(coll: SyntheticCollection) -> tuple[float, float]:
        women: list[bool] = []
        others: list[bool] = []
        for oid in coll.object_ids:
            t = coll.truth(oid)
            (women if "Women" in t["tags"] else others).append(t["tint"])
        return float(np.mean(women)), float(np.mean(others))

    biased = SyntheticCollection(CollectionConfig(n_objects=3000, seed=0, bias=0.9))
    w, o = rates(biased)
    assert abs(w - 0.9) < 0.05 and abs(o - 0.05) < 0.03
    plain = SyntheticCollection(CollectionConfig(n_objects=3000, seed=0))
    w, o = rates(plain)
    assert abs(w - 0.1) < 0.05 and abs(o - 0.1) < 0.03
    oid = next(i for i in biased.object_ids if biased.truth(i)["tags"])
    scene = biased._scene(oid, "small", 0)
    tinted = np.asarray(render_scene(replace(scene, tint=True), 300, 300), np.int32)
    untinted = np.asarray(render_scene(replace(scene, tint=False), 300, 300), np.int32)
    changed = np.abs(tinted - untinted).sum(axis=-1) > 0
    motif = np.zeros_like(changed)
    for tag, _box in scene.motifs:
        motif |= (untinted == np.array(MOTIFS[tag][1])).all(axis=-1)
    assert motif.sum() > 200 and not (changed & motif).any()  # motifs are never tinted
    assert changed[~motif].mean() > 0.9  # the background is
    redder = (tinted[..., 0] - tinted[..., 2]) > (untinted[..., 0] - untinted[..., 2])
    assert redder[changed].mean() > 0.9  # and the tint is warm


# ----- running outside pytest's loop ---------------------------------------------------------------
def test_run_fake_api_in_background_thread() -> None:
    with run_fake_api(n_objects=30, seed=1) as bg:
        with urllib.request.urlopen(f"{bg.api_url}/objects", timeout=10) as r:
            ids = json.loads(r.read())["objectIDs"]
        assert len(ids) == 30
        bg.mutate(ids[0], title="Changed")
        with urllib.request.urlopen(f"{bg.api_url}/objects/{ids[0]}", timeout=10) as r:
            assert json.loads(r.read())["title"] == "Changed"
        assert bg.count("/objects/") == 1


def test_cli_fake_api_subprocess(tmp_path: Path) -> None:
    truth = tmp_path / "truth.json"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "met_harvester", "fake-api", "--port", "0", "--objects", "40",
           "--seed", "2", "--bias", "0.9", "--truth-out", str(truth), "--p503", "0"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        m = re.match(
            r"^fake-api listening on (http://127\.0\.0\.1:\d+/public/collection/v1)$", line.strip()
        )
        assert m, line
        with urllib.request.urlopen(m.group(1) + "/objects", timeout=10) as r:
            assert json.loads(r.read())["total"] == 40
        data = json.loads(truth.read_text())
        assert len(data) == 40 and all(set(v["boxes"]) == set(v["tags"]) for v in data.values())
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0


def test_cli_help_and_bad_input() -> None:
    import typer
    from typer.main import get_command
    from typer.testing import CliRunner

    from met_harvester.commands import fake_api_cmd

    app = typer.Typer()
    fake_api_cmd.register(app)
    app.command("other")(lambda: None)  # keep "fake-api" a subcommand
    command = get_command(app).commands["fake-api"]  # type: ignore[attr-defined]
    params = [p for p in command.params if p.name != "help"]
    assert len(params) > 30 and all(getattr(p, "help", None) for p in params)
    runner = CliRunner()
    for args, flag in (
        (["--p403", "1.5"], "--p403"),
        (["--latency", "-1"], "--latency"),
        (["--firewall-requests", "0"], "--firewall-requests"),
        (["--objects", "-3"], "--objects"),
    ):
        result = runner.invoke(app, ["fake-api", *args])
        assert result.exit_code == 2
        assert result.stderr.startswith("met-harvester: error: ") and flag in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
