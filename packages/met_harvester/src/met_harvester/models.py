"""Pydantic models of Met API records: tolerant of what the real API sends, strict where it matters.

Tolerant: empty strings, nulls, numbers where strings are documented (and the reverse), missing keys,
unknown new keys (kept), the 2019 schema (tags as plain strings, constituents without ids).
Strict: the body must be a JSON object whose `objectID` is an int equal to the id asked for, and
`tags` / `constituents` must be null or lists of recognisable entries (they feed the labels).
A record that fails is raised as `RecordError` and goes to the quarantine table.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetPydanticSchema,
    StrictInt,
    ValidationError,
    field_validator,
)
from pydantic_core import core_schema


class RecordError(ValueError):
    """A record that cannot be stored as an object; its text is a one-line reason."""


def _to_text(value: Any) -> str | None:
    """Strings stay, numbers and booleans become text, anything else becomes None."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return None


def _to_int(value: Any) -> int | None:
    """Ints stay; integral floats and integer strings are converted; anything else is None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


def _to_bool(value: Any) -> bool | None:
    """Booleans stay; 0/1 and "true"/"false" (any case) are converted; anything else is None."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return None


def _to_url_list(value: Any) -> list[str]:
    """A list of URL strings; null becomes [], a single string a one-item list, junk items drop."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list):
        return [item for item in value if isinstance(item, str) and item]
    return []


def _exact_or(exact: core_schema.CoreSchema, convert: Callable[[Any], Any]) -> GetPydanticSchema:
    """None and values of the exact type pass inside pydantic-core; only anything else calls
    `convert` (saves a Python call for each of the ~55 such fields of a record)."""
    schema = core_schema.nullable_schema(
        core_schema.union_schema(
            [exact, core_schema.no_info_plain_validator_function(convert)], mode="left_to_right"
        )
    )
    return GetPydanticSchema(lambda _source, _handler: schema)


# Each is equal to the BeforeValidator of its converter (which maps None and the exact type to
# themselves); strict int and bool schemas refuse bool and 0/1 respectively, leaving those to it.
Text = Annotated[str | None, _exact_or(core_schema.str_schema(strict=True), _to_text)]
LooseInt = Annotated[int | None, _exact_or(core_schema.int_schema(strict=True), _to_int)]
LooseBool = Annotated[bool | None, _exact_or(core_schema.bool_schema(strict=True), _to_bool)]
UrlList = Annotated[list[str], BeforeValidator(_to_url_list)]


class Tag(BaseModel):
    """A subject keyword tag: `{term, AAT_URL, Wikidata_URL}` (2019 bodies: a plain string)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    term: str
    aat_url: Text = Field(None, alias="AAT_URL")
    wikidata_url: Text = Field(None, alias="Wikidata_URL")

    @field_validator("term", mode="before")
    @classmethod
    def _term_is_text(cls, value: Any) -> Any:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        return value


class Constituent(BaseModel):
    """A maker or other party of an object, with role and gender (2019 bodies: no id)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    constituent_id: LooseInt = Field(None, alias="constituentID")
    role: Text = None
    name: Text = None
    ulan_url: Text = Field(None, alias="constituentULAN_URL")
    wikidata_url: Text = Field(None, alias="constituentWikidata_URL")
    gender: Text = None

    def stable_id(self) -> int:
        """The API's id, or for id-less (2019) constituents a stable negative id from the name."""
        if self.constituent_id is not None:
            return self.constituent_id
        digest = hashlib.sha256((self.name or "").encode("utf-8")).digest()
        return -(int.from_bytes(digest[:7], "big") + 1)


class MetObject(BaseModel):
    """One object record of `GET /objects/{id}`; unknown keys are kept (`model_extra`)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    object_id: StrictInt = Field(alias="objectID")
    is_highlight: LooseBool = Field(None, alias="isHighlight")
    accession_number: Text = Field(None, alias="accessionNumber")
    accession_year: Text = Field(None, alias="accessionYear")
    is_public_domain: LooseBool = Field(None, alias="isPublicDomain")
    primary_image: Text = Field(None, alias="primaryImage")
    primary_image_small: Text = Field(None, alias="primaryImageSmall")
    additional_images: UrlList = Field(default_factory=list, alias="additionalImages")
    constituents: list[Constituent] | None = None
    department: Text = None
    object_name: Text = Field(None, alias="objectName")
    title: Text = None
    culture: Text = None
    period: Text = None
    dynasty: Text = None
    reign: Text = None
    portfolio: Text = None
    artist_role: Text = Field(None, alias="artistRole")
    artist_prefix: Text = Field(None, alias="artistPrefix")
    artist_display_name: Text = Field(None, alias="artistDisplayName")
    artist_display_bio: Text = Field(None, alias="artistDisplayBio")
    artist_suffix: Text = Field(None, alias="artistSuffix")
    artist_alpha_sort: Text = Field(None, alias="artistAlphaSort")
    artist_nationality: Text = Field(None, alias="artistNationality")
    artist_begin_date: Text = Field(None, alias="artistBeginDate")
    artist_end_date: Text = Field(None, alias="artistEndDate")
    artist_gender: Text = Field(None, alias="artistGender")
    artist_wikidata_url: Text = Field(None, alias="artistWikidata_URL")
    artist_ulan_url: Text = Field(None, alias="artistULAN_URL")
    object_date: Text = Field(None, alias="objectDate")
    object_begin_date: LooseInt = Field(None, alias="objectBeginDate")
    object_end_date: LooseInt = Field(None, alias="objectEndDate")
    medium: Text = None
    dimensions: Text = None
    measurements: Any = None
    credit_line: Text = Field(None, alias="creditLine")
    geography_type: Text = Field(None, alias="geographyType")
    city: Text = None
    state: Text = None
    county: Text = None
    country: Text = None
    region: Text = None
    subregion: Text = None
    locale: Text = None
    locus: Text = None
    excavation: Text = None
    river: Text = None
    classification: Text = None
    rights_and_reproduction: Text = Field(None, alias="rightsAndReproduction")
    link_resource: Text = Field(None, alias="linkResource")
    metadata_date: Text = Field(None, alias="metadataDate")
    repository: Text = None
    object_url: Text = Field(None, alias="objectURL")
    tags: list[Tag] | None = None
    object_wikidata_url: Text = Field(None, alias="objectWikidata_URL")
    is_timeline_work: LooseBool = Field(None, alias="isTimelineWork")
    gallery_number: Text = Field(None, alias="GalleryNumber")

    @field_validator("tags", mode="before")
    @classmethod
    def _tags_from_strings(cls, value: Any) -> Any:
        # 2019 schema: ["Landscapes", "Trees"]; a lone string is one tag.
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list):
            return [{"term": item} if isinstance(item, str) else item for item in value]
        return value

    def tag_list(self) -> list[Tag]:
        """Tags with a non-empty term, first occurrence of each term only."""
        seen: set[str] = set()
        out: list[Tag] = []
        for tag in self.tags or []:
            term = tag.term.strip()
            if term and term not in seen:
                seen.add(term)
                out.append(tag)
        return out

    def constituent_list(self) -> list[Constituent]:
        """Constituents in the API's order (null becomes [])."""
        return list(self.constituents or [])


_CANONICAL = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, check_circular=False
)
"""Made once: `json.dumps` with options builds an encoder per call (decoded JSON has no cycles)."""


def canonical_json(data: Any) -> str:
    """Key-sorted, compact JSON: the text `content_sha256` is computed over."""
    return _CANONICAL.encode(data)


def content_sha256(data: Any) -> str:
    """sha256 (hex) of the canonical JSON of a record: equal content gives equal hashes.
    (A lone surrogate from a `\\ud800` escape is hashed as its code point, never an error.)"""
    return hashlib.sha256(canonical_json(data).encode("utf-8", "surrogatepass")).hexdigest()


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors()[:3]:
        where = ".".join(str(p) for p in item["loc"]) or "record"
        given = repr(item.get("input"))
        if len(given) > 60:
            given = given[:57] + "..."
        parts.append(f"{where}: {item['msg']} (got {given})")
    more = error.error_count() - 3
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def parse_object(data: Any, expected_id: int) -> MetObject:
    """Validate one parsed body as the record of `expected_id`.

    Args:
        data: the JSON-decoded body.
        expected_id: the id that was asked for.

    Raises:
        RecordError: with a one-line reason when the record must go to quarantine.
    """
    if not isinstance(data, dict):
        raise RecordError(f"body is a JSON {type(data).__name__}, not an object")
    try:
        record = MetObject.model_validate(data)
    except ValidationError as exc:
        raise RecordError(_describe(exc)) from None
    if record.object_id != expected_id:
        raise RecordError(f"objectID is {record.object_id}, expected {expected_id}")
    return record


def parse_body(body: str, expected_id: int) -> tuple[MetObject, Any]:
    """Decode and validate a raw body; returns the record and the decoded JSON.

    Raises:
        RecordError: when the body is not JSON or the record is invalid.
    """
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise RecordError(f"body is not JSON: {exc}") from None
    return parse_object(data, expected_id), data
