"""Build one Met-shaped record (the real 57 keys, in order) from an object's drawn attributes."""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

from met_harvester.testing.vocab import (
    CLASS_VOCAB,
    CREDIT_LINES,
    OBJECT_DEPARTMENT_NAMES,
    PERIODS,
    RECORD_KEYS,
    SECONDARY_NAMES,
    SECONDARY_ROLES,
    TAG_URLS,
    TITLE_SUBJECTS,
    UNTITLED,
)


def format_metadata_date(ms: int, object_id: int) -> str:
    """ISO timestamp with Z and 0–3 fractional digits, as the real API writes them."""
    stamp = dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)
    base = stamp.strftime("%Y-%m-%dT%H:%M:%S")
    digits = object_id % 4
    if digits == 0:
        return base + "Z"
    frac = f"{ms % 1000:03d}"[:digits].rstrip("0") or "0"
    return f"{base}.{frac}Z"


def _dimensions(rng: random.Random) -> tuple[str, list[dict[str, Any]] | None]:
    h = round(rng.uniform(8, 180), 1)
    w = round(rng.uniform(8, 180), 1)
    text = f"{h / 2.54:.1f} x {w / 2.54:.1f} in. ({h} x {w} cm)"
    if rng.random() < 0.2:  # real bodies carry CRLF between elements
        text += f"\r\nframed: {h / 2.54 + 4:.1f} x {w / 2.54 + 4:.1f} in. ({h + 10} x {w + 10} cm)"
    if rng.random() < 0.1:
        return text, None
    element = {
        "elementName": "Overall",
        "elementDescription": None,
        "elementMeasurements": {"Height": h, "Width": w},
    }
    return text, [element]


def build_record(
    object_id: int,
    *,
    rng: random.Random,
    classification: str,
    department_id: int,
    tags: list[str] | None,
    is_public_domain: bool,
    metadata_ms: int,
    image_urls: tuple[str, str, list[str]],
) -> dict[str, Any]:
    """One record; `rng` must be seeded from (seed, object_id) for determinism.

    Args:
        object_id: The id.
        rng: Per-object random stream.
        classification: One of CLASSIFICATIONS.
        department_id: Department id (the record carries the object-side department name).
        tags: Tag terms, or None for a record whose `tags` is null.
        is_public_domain: Non-public-domain records have empty image fields.
        metadata_ms: metadataDate in ms since the epoch.
        image_urls: (primaryImage, primaryImageSmall, additionalImages) for public-domain records.
    """
    vocab = CLASS_VOCAB[classification]
    artist = rng.choice(vocab.artists) if rng.random() < 0.75 else None
    culture = rng.choice(vocab.cultures)
    if artist is not None:
        begin_year = int(artist.begin) if artist.begin.isdigit() else rng.randint(1500, 1900)
        end_year = (
            int(artist.end) if artist.end.isdigit() and artist.end != "9999" else begin_year + 60
        )
        year = rng.randint(min(begin_year + 18, end_year), max(begin_year + 18, end_year))
    else:
        year = rng.randint(-500, 1950)
    span = rng.choice((0, 0, 1, 5, 25))
    if year < 0:
        object_date = f"{-year} B.C." if span == 0 else f"ca. {-year}–{-year - span} B.C."
    elif span == 0:
        object_date = str(year)
    elif span == 1:
        object_date = f"{year}–{str(year + 1)[-2:]}"
    else:
        object_date = f"ca. {year}"
    subject_tags = tags or []
    title = rng.choice(TITLE_SUBJECTS[subject_tags[0]]) if subject_tags else rng.choice(UNTITLED)
    dimensions, measurements = _dimensions(rng)
    accession_year = rng.randint(1870, 2022)
    constituents: list[dict[str, Any]] | None = None
    if artist is not None:
        constituents = [
            {
                "constituentID": artist.constituent_id,
                "role": "Artist",
                "name": artist.name,
                "constituentULAN_URL": artist.ulan,
                "constituentWikidata_URL": artist.wikidata,
                "gender": artist.gender,
            }
        ]
        if rng.random() < 0.15:
            k = rng.randrange(len(SECONDARY_NAMES))
            constituents.append(
                {
                    "constituentID": 200000 + k * 7919,
                    "role": SECONDARY_ROLES[k],
                    "name": SECONDARY_NAMES[k],
                    "constituentULAN_URL": "",
                    "constituentWikidata_URL": "",
                    "gender": "",
                }
            )
    primary, small, additional = image_urls if is_public_domain else ("", "", [])
    values: dict[str, Any] = {
        "objectID": object_id,
        "isHighlight": rng.random() < 0.02,
        "accessionNumber": f"{accession_year % 100:02d}.{rng.randint(1, 250)}.{rng.randint(1, 40)}",
        "accessionYear": str(accession_year),
        "isPublicDomain": is_public_domain,
        "primaryImage": primary,
        "primaryImageSmall": small,
        "additionalImages": list(additional),
        "constituents": constituents,
        "department": OBJECT_DEPARTMENT_NAMES[department_id],
        "objectName": rng.choice(vocab.object_names),
        "title": title,
        "culture": culture,
        "period": rng.choice(PERIODS[culture]) if culture in PERIODS else "",
        "dynasty": "",
        "reign": "",
        "portfolio": "",
        "artistRole": "Artist" if artist else "",
        "artistPrefix": "",
        "artistDisplayName": artist.name if artist else "",
        "artistDisplayBio": artist.bio if artist else "",
        "artistSuffix": "",
        "artistAlphaSort": artist.alpha_sort if artist else "",
        "artistNationality": artist.nationality if artist else "",
        "artistBeginDate": artist.begin if artist else "",
        "artistEndDate": artist.end if artist else "",
        "artistGender": artist.gender if artist else "",
        "artistWikidata_URL": artist.wikidata if artist else "",
        "artistULAN_URL": artist.ulan if artist else "",
        "objectDate": object_date,
        "objectBeginDate": year,
        "objectEndDate": year + span,
        "medium": rng.choice(vocab.media),
        "dimensions": dimensions,
        "measurements": measurements,
        "creditLine": rng.choice(CREDIT_LINES),
        "geographyType": "",
        "city": "",
        "state": "",
        "county": "",
        "country": "",
        "region": "",
        "subregion": "",
        "locale": "",
        "locus": "",
        "excavation": "",
        "river": "",
        "classification": classification,
        "rightsAndReproduction": "",
        "linkResource": "",
        "metadataDate": format_metadata_date(metadata_ms, object_id),
        "repository": "Metropolitan Museum of Art, New York, NY",
        "objectURL": f"https://www.metmuseum.org/art/collection/search/{object_id}",
        "tags": (
            [{"term": t, "AAT_URL": TAG_URLS[t][0], "Wikidata_URL": TAG_URLS[t][1]} for t in tags]
            if tags
            else None
        ),
        "objectWikidata_URL": (
            f"https://www.wikidata.org/wiki/Q{rng.randint(1_000_000, 99_999_999)}"
            if rng.random() < 0.2
            else ""
        ),
        "isTimelineWork": rng.random() < 0.03,
        "GalleryNumber": str(rng.randint(500, 999)) if rng.random() < 0.3 else "",
    }
    return {key: values[key] for key in RECORD_KEYS}
