"""Where the Met's CSV and its API disagree: a data-quality report for the museum.

`diff_csv_api` walks `csv_objects` and `objects` (not withdrawn) in id order, side by side, with
constant memory, and counts:

- ids only in the CSV, ids only in the API mirror;
- for ids in both: a different set of tag terms (CSV `Tags` vs the API's `tags[].term`),
  a different public-domain flag, a different department string.

Each category keeps a sample of the lowest ids (with the two values). Tag terms and department
pairs that disagree most often are tallied too.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

CATEGORIES = (
    "only_in_csv",
    "only_in_api",
    "tags_differ",
    "public_domain_differs",
    "department_differs",
)
_TITLES = {
    "only_in_csv": "Ids only in the CSV",
    "only_in_api": "Ids only in the API mirror",
    "tags_differ": "Tags differ",
    "public_domain_differs": "Public-domain flag differs",
    "department_differs": "Department differs",
}
_TOP = 20


@dataclass
class Category:
    """A kind of disagreement: how many ids, and a sample of the first ones."""

    count: int = 0
    sample: list[dict[str, Any]] = field(default_factory=list)

    def add(self, entry: dict[str, Any], sample_size: int) -> None:
        """Count one id; keep it in the sample while there is room."""
        self.count += 1
        if len(self.sample) < sample_size:
            self.sample.append(entry)


@dataclass
class CsvApiDiff:
    """The result of `diff_csv_api`."""

    csv_objects: int = 0
    api_objects: int = 0
    in_both: int = 0
    withdrawn_in_api: int = 0  # of the ids only in the CSV, how many the API mirror has withdrawn
    categories: dict[str, Category] = field(
        default_factory=lambda: {name: Category() for name in CATEGORIES}
    )
    terms_only_in_csv: Counter[str] = field(default_factory=Counter)
    terms_only_in_api: Counter[str] = field(default_factory=Counter)
    department_pairs: Counter[tuple[str, str]] = field(default_factory=Counter)

    @property
    def disagreements(self) -> int:
        """Ids in any category (an id can be in several)."""
        return sum(category.count for category in self.categories.values())

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready form (stable keys, for machines)."""
        return {
            "csv_objects": self.csv_objects,
            "api_objects": self.api_objects,
            "in_both": self.in_both,
            "withdrawn_in_api": self.withdrawn_in_api,
            "categories": {
                name: {"count": cat.count, "sample": cat.sample}
                for name, cat in self.categories.items()
            },
            "terms_only_in_csv": self.terms_only_in_csv.most_common(_TOP),
            "terms_only_in_api": self.terms_only_in_api.most_common(_TOP),
            "department_pairs": [
                {"csv": csv_name, "api": api_name, "count": count}
                for (csv_name, api_name), count in self.department_pairs.most_common(_TOP)
            ],
        }

    def to_markdown(self) -> str:
        """A readable report: counts, then a sample of ids per category."""
        lines = [
            "# CSV vs API: where the Met's two sources disagree",
            "",
            f"CSV rows: {self.csv_objects:,}; API mirror objects (not withdrawn): "
            f"{self.api_objects:,}; in both: {self.in_both:,}.",
            "",
            "| category | ids |",
            "|---|---:|",
        ]
        lines += [f"| {_TITLES[name]} | {cat.count:,} |" for name, cat in self.categories.items()]
        if self.withdrawn_in_api:
            lines += ["", f"Of the ids only in the CSV, {self.withdrawn_in_api:,} were withdrawn "
                      "from the API."]  # fmt: skip
        for name, cat in self.categories.items():
            if not cat.count:
                continue
            lines += ["", f"## {_TITLES[name]} (first {len(cat.sample)} of {cat.count:,})", ""]
            if name.startswith("only_in_"):
                lines.append(", ".join(str(entry["object_id"]) for entry in cat.sample))
            else:
                lines += [f"- {_describe(entry)}" for entry in cat.sample]
        for title, counter in (
            ("Tag terms only in the CSV", self.terms_only_in_csv),
            ("Tag terms only in the API", self.terms_only_in_api),
        ):
            if counter:
                lines += ["", f"## {title} (most frequent)", ""]
                lines += [f"- {term}: {count:,}" for term, count in counter.most_common(_TOP)]
        if self.department_pairs:
            lines += ["", "## Department pairs (CSV -> API, most frequent)", ""]
            lines += [
                f"- {csv_name!r} -> {api_name!r}: {count:,}"
                for (csv_name, api_name), count in self.department_pairs.most_common(_TOP)
            ]
        if not self.disagreements:
            lines += ["", "No disagreement."]
        return "\n".join(lines) + "\n"


def _describe(entry: dict[str, Any]) -> str:
    details = ", ".join(f"{key} {value!r}" for key, value in entry.items() if key != "object_id")
    return f"{entry['object_id']}" + (f": {details}" if details else "")


def _norm_text(value: str | None) -> str:
    return (value or "").strip()


def _rows(conn: sqlite3.Connection, sql: str) -> Iterator[tuple[Any, ...]]:
    yield from conn.execute(sql)


def _api_tags(conn: sqlite3.Connection) -> Iterator[tuple[int, set[str]]]:
    """(object_id, terms) for every object with API tags, in id order."""
    current: int | None = None
    terms: set[str] = set()
    for object_id, term in conn.execute(
        "SELECT ot.object_id, t.term FROM object_tags AS ot JOIN tags AS t USING (tag_id) "
        "WHERE ot.source = 'api' ORDER BY ot.object_id"
    ):
        if object_id != current:
            if current is not None:
                yield current, terms
            current, terms = object_id, set()
        terms.add(term.strip())
    if current is not None:
        yield current, terms


def diff_csv_api(conn: sqlite3.Connection, *, sample_size: int = 20) -> CsvApiDiff:
    """Compare `csv_objects` with `objects` (see the module docstring).

    Args:
        conn: the mirror's database.
        sample_size: ids kept per category.
    """
    result = CsvApiDiff()
    cats = result.categories
    csv_rows = _rows(
        conn,
        "SELECT c.object_id, c.is_public_domain, c.department, c.tags, "
        "o.withdrawn_at IS NOT NULL FROM csv_objects AS c "
        "LEFT JOIN objects AS o ON o.object_id = c.object_id ORDER BY c.object_id",
    )
    api_rows = _rows(
        conn,
        "SELECT object_id, is_public_domain, department FROM objects "
        "WHERE withdrawn_at IS NULL ORDER BY object_id",
    )
    api_tags = _api_tags(conn)
    next_tags = next(api_tags, None)
    csv_row = next(csv_rows, None)
    api_row = next(api_rows, None)
    while csv_row is not None or api_row is not None:
        if api_row is None or (csv_row is not None and csv_row[0] < api_row[0]):
            assert csv_row is not None
            result.csv_objects += 1
            cats["only_in_csv"].add({"object_id": csv_row[0]}, sample_size)
            if csv_row[4]:
                result.withdrawn_in_api += 1
            csv_row = next(csv_rows, None)
            continue
        if csv_row is None or api_row[0] < csv_row[0]:
            result.api_objects += 1
            cats["only_in_api"].add({"object_id": api_row[0]}, sample_size)
            api_row = next(api_rows, None)
            continue
        object_id = csv_row[0]
        result.csv_objects += 1
        result.api_objects += 1
        result.in_both += 1
        while next_tags is not None and next_tags[0] < object_id:
            next_tags = next(api_tags, None)
        api_terms = next_tags[1] if next_tags is not None and next_tags[0] == object_id else set()
        csv_terms = {term.strip() for term in json.loads(csv_row[3] or "[]")}
        if csv_terms != api_terms:
            only_csv, only_api = csv_terms - api_terms, api_terms - csv_terms
            cats["tags_differ"].add(
                {
                    "object_id": object_id,
                    "csv_only": sorted(only_csv),
                    "api_only": sorted(only_api),
                },
                sample_size,
            )
            result.terms_only_in_csv.update(only_csv)
            result.terms_only_in_api.update(only_api)
        if csv_row[1] != api_row[1]:
            cats["public_domain_differs"].add(
                {"object_id": object_id, "csv": _flag(csv_row[1]), "api": _flag(api_row[1])},
                sample_size,
            )
        csv_dept, api_dept = _norm_text(csv_row[2]), _norm_text(api_row[2])
        if csv_dept != api_dept:
            cats["department_differs"].add(
                {"object_id": object_id, "csv": csv_dept, "api": api_dept}, sample_size
            )
            result.department_pairs[(csv_dept, api_dept)] += 1
        csv_row = next(csv_rows, None)
        api_row = next(api_rows, None)
    return result


def _flag(value: int | None) -> bool | None:
    return None if value is None else bool(value)
