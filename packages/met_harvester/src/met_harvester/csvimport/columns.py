"""The columns of the Met's Open Access `MetObjects.csv` and how cells become typed values.

Typed values follow the `objects` table (the API path), so CSV and API rows compare directly:
text cells are kept as sent but empty ones become NULL (as the API path stores `""`), booleans `True`/`False` become 1/0, years become
integers, and the pipe-joined artist columns give their first entry (the API's `artistDisplayName`
and `artistGender` describe the first constituent).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from operator import itemgetter
from typing import NamedTuple

MET_COLUMNS: tuple[str, ...] = (
    "Object Number",
    "Is Highlight",
    "Is Timeline Work",
    "Is Public Domain",
    "Object ID",
    "Gallery Number",
    "Department",
    "AccessionYear",
    "Object Name",
    "Title",
    "Culture",
    "Period",
    "Dynasty",
    "Reign",
    "Portfolio",
    "Constituent ID",
    "Artist Role",
    "Artist Prefix",
    "Artist Display Name",
    "Artist Display Bio",
    "Artist Suffix",
    "Artist Alpha Sort",
    "Artist Nationality",
    "Artist Begin Date",
    "Artist End Date",
    "Artist Gender",
    "Artist ULAN URL",
    "Artist Wikidata URL",
    "Object Date",
    "Object Begin Date",
    "Object End Date",
    "Medium",
    "Dimensions",
    "Credit Line",
    "Geography Type",
    "City",
    "State",
    "County",
    "Country",
    "Region",
    "Subregion",
    "Locale",
    "Locus",
    "Excavation",
    "River",
    "Classification",
    "Rights and Reproduction",
    "Link Resource",
    "Object Wikidata URL",
    "Metadata Date",
    "Repository",
    "Tags",
    "Tags AAT URL",
    "Tags Wikidata URL",
)
"""The 54 columns of MetObjects.csv, in the official order."""

REQUIRED_COLUMNS: tuple[str, ...] = (
    "Object ID",
    "Object Number",
    "Is Public Domain",
    "Department",
    "Object Name",
    "Title",
    "Classification",
)
"""Columns without which a file is refused (every published MetObjects.csv has them). Other Met
columns missing from a file give a warning and are read as empty."""

# typed column of csv_objects -> CSV header
TEXT_COLUMNS: dict[str, str] = {
    "department": "Department",
    "classification": "Classification",
    "object_name": "Object Name",
    "title": "Title",
    "culture": "Culture",
    "period": "Period",
    "accession_year": "AccessionYear",
    "accession_number": "Object Number",
}
FIRST_OF_PIPES_COLUMNS: dict[str, str] = {
    "artist_display_name": "Artist Display Name",
    "artist_gender": "Artist Gender",
}
BOOL_COLUMNS: dict[str, str] = {
    "is_public_domain": "Is Public Domain",
    "is_highlight": "Is Highlight",
}
INT_COLUMNS: dict[str, str] = {
    "object_begin_date": "Object Begin Date",
    "object_end_date": "Object End Date",
}

TYPED_COLUMNS: tuple[str, ...] = (
    *TEXT_COLUMNS,
    *FIRST_OF_PIPES_COLUMNS,
    *BOOL_COLUMNS,
    *INT_COLUMNS,
)
"""The typed columns of `csv_objects` filled from cells, in the order `typed_values` returns."""

_JSON_ESCAPED = re.compile(r'[\x00-\x1f"\\]')
"""What `json.dumps(..., ensure_ascii=False)` escapes in a string."""
_TRUE = frozenset({"true", "1", "yes", "y", "t"})
_FALSE = frozenset({"false", "0", "no", "n", "f"})


_BOOL_FAST = {"True": 1, "False": 0}


def parse_bool(cell: str) -> int | None:
    """`True`/`False` (any case, also 1/0, yes/no) as 1/0; anything else as None."""
    fast = _BOOL_FAST.get(cell)
    if fast is not None:
        return fast
    value = cell.strip().lower()
    if value in _TRUE:
        return 1
    if value in _FALSE:
        return 0
    return None


def parse_int(cell: str) -> int | None:
    """An integer cell (e.g. `-664`), or None when empty or not an integer."""
    try:
        return int(cell)
    except ValueError:
        return None


def first_of_pipes(cell: str) -> str:
    """The first entry of a pipe-joined multi-value cell, stripped (`"Female|"` -> `"Female"`)."""
    return cell.split("|", 1)[0].strip()


def _or_none(cell: str) -> str | None:
    return cell or None


def _first_of_pipes_or_none(cell: str) -> str | None:
    return first_of_pipes(cell) or None


class TagCell(NamedTuple):
    """One tag of a row: its term and the aligned AAT and Wikidata URLs (None when absent)."""

    term: str
    aat_url: str | None
    wikidata_url: str | None


def split_tags(terms: str, aat_urls: str, wikidata_urls: str) -> list[TagCell]:
    """Split the pipe-joined Tags columns into aligned tags, dropping empty and repeated terms.

    The URL columns are aligned by position with the terms; a missing or empty position gives None.
    """
    if not terms:
        return []
    names = terms.split("|")
    n = len(names)
    aat = aat_urls.split("|") if aat_urls else []
    wikidata = wikidata_urls.split("|") if wikidata_urls else []
    if len(aat) < n:
        aat += [""] * (n - len(aat))
    if len(wikidata) < n:
        wikidata += [""] * (n - len(wikidata))
    tags = [
        TagCell(term.strip(), aat[i].strip() or None, wikidata[i].strip() or None)
        for i, term in enumerate(names)
    ]
    if n == 1:
        return tags if tags[0].term else []
    seen: set[str] = set()
    unique = []
    for tag in tags:
        if tag.term and tag.term not in seen:
            seen.add(tag.term)
            unique.append(tag)
    return unique


TYPING_COLUMNS: tuple[str, ...] = (
    *TEXT_COLUMNS.values(),
    *FIRST_OF_PIPES_COLUMNS.values(),
    *BOOL_COLUMNS.values(),
    *INT_COLUMNS.values(),
    "Tags",
    "Tags AAT URL",
    "Tags Wikidata URL",
    "Metadata Date",
)
"""The CSV columns `type_cells` reads, in the order `typing_picker` picks them."""

_TEXT_END = len(TEXT_COLUMNS)
_PIPES_END = _TEXT_END + len(FIRST_OF_PIPES_COLUMNS)
_BOOLS_END = _PIPES_END + len(BOOL_COLUMNS)
_INTS_END = _BOOLS_END + len(INT_COLUMNS)


def tuple_getter(positions: Sequence[int]) -> Callable[[Sequence[str]], tuple[str, ...]]:
    """`itemgetter(*positions)`, always returning a tuple (also for one position or none)."""
    if len(positions) > 1:
        return itemgetter(*positions)  # type: ignore[return-value]
    if positions:
        only = positions[0]
        return lambda cells: (cells[only],)
    return lambda cells: ()


def typing_picker(header: Sequence[str]) -> Callable[[Sequence[str]], tuple[str, ...]]:
    """A function picking a row's `TYPING_COLUMNS` cells, for a file with this header (a column
    the file lacks is picked as an empty cell)."""
    index = {name: position for position, name in enumerate(header)}
    positions = [index.get(name, len(header)) for name in TYPING_COLUMNS]
    pick = tuple_getter(positions)
    if all(name in index for name in TYPING_COLUMNS):
        return pick
    return lambda cells: pick([*cells, ""])


class TypedRow(NamedTuple):
    """A row's typed values (`TYPED_COLUMNS` order), tags and Metadata Date."""

    values: list[object]
    tags: list[TagCell]
    metadata_date: str | None


def type_cells(picked: Sequence[str]) -> TypedRow:
    """Type the cells picked by `typing_picker` into the values of `csv_objects`."""
    return TypedRow(
        [
            *map(_or_none, picked[:_TEXT_END]),
            *map(_first_of_pipes_or_none, picked[_TEXT_END:_PIPES_END]),
            *map(parse_bool, picked[_PIPES_END:_BOOLS_END]),
            *map(parse_int, picked[_BOOLS_END:_INTS_END]),
        ],
        split_tags(picked[_INTS_END], picked[_INTS_END + 1], picked[_INTS_END + 2]),
        picked[_INTS_END + 3].strip() or None,
    )


FREE_TEXT_COLUMNS: frozenset[str] = frozenset(
    {"Title", "Dimensions", "Medium", "Credit Line", "Object Name", "Portfolio", "Inscription"}
)
"""Columns whose cells often hold quotes or line breaks (which JSON escapes): `raw_row_encoder`
always escapes them."""


def raw_row_encoder(header: Sequence[str]) -> Callable[[Sequence[str]], str]:
    """A function giving the `raw_row` JSON of a row's cells: exactly
    `json.dumps(dict(zip(header, cells)), ensure_ascii=False)`, about three times as fast.

    The cells of `FREE_TEXT_COLUMNS` are escaped one by one; the others rarely hold what JSON
    escapes (`"`, `\\`, control characters), so one search over them all decides whether they can
    go into the template as they are (the quotes are in the template), or must be escaped too.
    """
    names = [json.dumps(name, ensure_ascii=False).replace("%", "%%") for name in header]
    escaped = [position for position, name in enumerate(header) if name in FREE_TEXT_COLUMNS]
    rest = [position for position in range(len(header)) if position not in escaped]
    escaping = "{" + ", ".join(f"{name}: %s" for name in names) + "}"
    mixed = (
        "{"
        + ", ".join(
            f"{name}: %s" if position in escaped else f'{name}: "%s"'
            for position, name in enumerate(names)
        )
        + "}"
    )
    encode = json.encoder.encode_basestring  # the C encoder behind ensure_ascii=False
    needs_escape = _JSON_ESCAPED.search
    pick_rest = tuple_getter(rest)

    def encode_row(cells: Sequence[str]) -> str:
        if needs_escape("".join(pick_rest(cells))) is None:
            args = list(cells)
            for position in escaped:
                args[position] = encode(args[position])
            return mixed % tuple(args)
        return escaping % tuple(map(encode, cells))

    return encode_row


def tags_json(tags: Sequence[TagCell]) -> str:
    """The `csv_objects.tags` value: a JSON list of the terms (`[]` when none)."""
    if not tags:
        return "[]"
    return json.dumps([tag.term for tag in tags], ensure_ascii=False)
