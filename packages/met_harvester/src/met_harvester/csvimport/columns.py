"""The columns of the Met's Open Access `MetObjects.csv` and how cells become typed values.

Typed values follow the `objects` table (the API path), so CSV and API rows compare directly:
text cells are kept as sent but empty ones become NULL (as the API path stores `""`), booleans `True`/`False` become 1/0, years become
integers, and the pipe-joined artist columns give their first entry (the API's `artistDisplayName`
and `artistGender` describe the first constituent).
"""

from __future__ import annotations

import json
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


class RowTyper:
    """Turns the cells of one row into the typed values of `csv_objects`, for one header.

    Args:
        header: the file's column names; columns it lacks are read as empty cells.
    """

    def __init__(self, header: Sequence[str]) -> None:
        index = {name: position for position, name in enumerate(header)}
        missing = len(header)  # cells get one "" appended when a column is absent
        self._pad = any(
            name not in index
            for name in (
                *TEXT_COLUMNS.values(),
                *FIRST_OF_PIPES_COLUMNS.values(),
                *BOOL_COLUMNS.values(),
                *INT_COLUMNS.values(),
                "Tags",
                "Tags AAT URL",
                "Tags Wikidata URL",
                "Metadata Date",
            )
        )

        def getter(columns: Sequence[str]) -> Callable[[Sequence[str]], tuple[str, ...]]:
            positions = [index.get(name, missing) for name in columns]
            if len(positions) == 1:
                only = positions[0]
                return lambda cells: (cells[only],)
            return itemgetter(*positions)

        self._text = getter(tuple(TEXT_COLUMNS.values()))
        self._pipes = getter(tuple(FIRST_OF_PIPES_COLUMNS.values()))
        self._bools = getter(tuple(BOOL_COLUMNS.values()))
        self._ints = getter(tuple(INT_COLUMNS.values()))
        self._tags = getter(("Tags", "Tags AAT URL", "Tags Wikidata URL"))
        self._metadata_date = index.get("Metadata Date", missing)

    def _padded(self, cells: Sequence[str]) -> Sequence[str]:
        return [*cells, ""] if self._pad else cells

    def typed_values(self, cells: Sequence[str]) -> list[object]:
        """The values of `TYPED_COLUMNS` for a row, in that order."""
        cells = self._padded(cells)
        return [
            *map(_or_none, self._text(cells)),
            *map(_first_of_pipes_or_none, self._pipes(cells)),
            *map(parse_bool, self._bools(cells)),
            *map(parse_int, self._ints(cells)),
        ]

    def tags(self, cells: Sequence[str]) -> list[TagCell]:
        """The row's tags, aligned with their URLs."""
        terms, aat, wikidata = self._tags(self._padded(cells))
        return split_tags(terms, aat, wikidata)

    def metadata_date(self, cells: Sequence[str]) -> str | None:
        """The row's `Metadata Date`, or None when empty."""
        return self._padded(cells)[self._metadata_date].strip() or None


def raw_row_encoder(header: Sequence[str]) -> Callable[[Sequence[str]], str]:
    """A function giving the `raw_row` JSON of a row's cells: exactly
    `json.dumps(dict(zip(header, cells)), ensure_ascii=False)`, about twice as fast."""
    template = (
        "{"
        + ", ".join(
            json.dumps(name, ensure_ascii=False).replace("%", "%%") + ": %s" for name in header
        )
        + "}"
    )
    encode = json.encoder.encode_basestring  # the C encoder behind ensure_ascii=False

    def encode_row(cells: Sequence[str]) -> str:
        return template % tuple(map(encode, cells))

    return encode_row


def tags_json(tags: Sequence[TagCell]) -> str:
    """The `csv_objects.tags` value: a JSON list of the terms (`[]` when none)."""
    if not tags:
        return "[]"
    return json.dumps([tag.term for tag in tags], ensure_ascii=False)
