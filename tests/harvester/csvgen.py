"""Seeded generator of full-shape Met Open Access CSVs (all 54 columns) for tests and the bench.

Rows look like MetObjects.csv: pipe-joined multi-artist and tag cells (tags aligned with their AAT
and Wikidata URLs), `True`/`False` flags, fixed-width padded artist dates, commas and quotes in
titles, non-ASCII text, and CRLF line breaks inside `Dimensions` (as in the real file).

    python tests/harvester/csvgen.py OUT.csv --rows 20000 --seed 0 [--bom]
"""

from __future__ import annotations

import argparse
import csv
import random
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from met_harvester.csvimport.columns import MET_COLUMNS

DEPARTMENTS = (
    "European Paintings",
    "Drawings and Prints",
    "Asian Art",
    "Egyptian Art",
    "Arms and Armor",
    "Musical Instruments",
    "The American Wing",
    "Robert Lehman Collection",
    "Costume Institute",
    "Greek and Roman Art",
)
CLASSIFICATIONS = ("Paintings", "Prints", "Ceramics", "Metalwork", "Textiles", "Sculpture", "")
OBJECT_NAMES = ("Painting", "Print", "Vase", "Sword", "Bowl", "Figure", "Drawing", "Fan")
CULTURES = ("", "French", "Japan", "China", "American", "Roman", "Egyptian")
TAG_TERMS = (
    "Men", "Women", "Boys", "Girls", "Horses", "Birds", "Flowers", "Landscapes",
    "Portraits", "Ships", "Dogs", "Christ", "Saints", "Coat of Arms", "Last Supper",
)  # fmt: skip
ARTISTS = (
    ("Vincent van Gogh", "Male"),
    ("Mary Cassatt", "Female"),
    ("Albrecht Dürer", ""),
    ("Katsushika Hokusai", ""),
    ("Élisabeth Louise Vigée Le Brun", "Female"),
    ("Érard", ""),
    ("Unknown", ""),
)


def tag_urls(term: str) -> tuple[str, str]:
    """Deterministic AAT and Wikidata URLs for a term."""
    code = sum(term.encode()) * 7919
    return (
        f"http://vocab.getty.edu/page/aat/300{code % 1000000:06d}",
        f"https://www.wikidata.org/wiki/Q{code % 99991 + 100}",
    )


def _padded(values: Sequence[str]) -> str:
    return "|".join(f"{value:<10}" for value in values)


def met_rows(n_rows: int, *, seed: int = 0, start_id: int = 1) -> Iterator[dict[str, str]]:
    """Yield `n_rows` seeded MetObjects.csv rows (header -> cell), ids ascending with gaps."""
    rng = random.Random(seed)
    object_id = start_id
    for _ in range(n_rows):
        object_id += rng.randint(1, 3)
        n_artists = rng.choice((0, 1, 1, 2, 3))
        artists = [rng.choice(ARTISTS) for _ in range(n_artists)]
        terms = rng.sample(TAG_TERMS, rng.choice((0, 0, 1, 2, 3, 4)))
        urls = [tag_urls(term) for term in terms]
        begin = rng.randint(-1000, 1950)
        title = rng.choice(
            ("Vase", 'The "Blue" Boy, study', "Cypresses, with a Comma", "Fan | with pipe", "富士")
        )
        dimensions = f"H. {rng.randint(1, 90)} cm"
        if rng.random() < 0.3:
            dimensions += f"\r\nDiam. {rng.randint(1, 40)} cm ({rng.randint(1, 15)} in.)"
        year = rng.randint(1870, 2020)
        cells = {
            "Object Number": f"{year}.{rng.randint(1, 300)}.{rng.randint(1, 9)}",
            "Is Highlight": rng.choice(("True", "False", "False")),
            "Is Timeline Work": rng.choice(("True", "False")),
            "Is Public Domain": rng.choice(("True", "True", "False")),
            "Object ID": str(object_id),
            "Gallery Number": rng.choice(("", "822", "207")),
            "Department": rng.choice(DEPARTMENTS),
            "AccessionYear": str(year),
            "Object Name": rng.choice(OBJECT_NAMES),
            "Title": title,
            "Culture": rng.choice(CULTURES),
            "Period": rng.choice(("", "Edo period (1615–1868)", "Ptolemaic Period")),
            "Constituent ID": "".join(str(rng.randint(1000, 99999)) for _ in artists),
            "Artist Role": "|".join(rng.choice(("Artist", "Maker", "Designer")) for _ in artists),
            "Artist Display Name": "|".join(name for name, _ in artists),
            "Artist Alpha Sort": "|".join(name for name, _ in artists),
            "Artist Begin Date": _padded([str(rng.randint(1400, 1900)) for _ in artists]),
            "Artist End Date": _padded([str(rng.randint(1450, 1990)) for _ in artists]),
            "Artist Gender": "|".join(gender for _, gender in artists),
            "Object Date": f"ca. {begin}",
            "Object Begin Date": str(begin),
            "Object End Date": str(begin + rng.randint(0, 50)),
            "Medium": rng.choice(("Oil on canvas", "Bronze", "Woodblock print; ink and color")),
            "Dimensions": dimensions,
            "Credit Line": f"Gift of Donor {rng.randint(1, 500)}, {year}",
            "Classification": rng.choice(CLASSIFICATIONS),
            "Link Resource": f"http://www.metmuseum.org/art/collection/search/{object_id}",
            "Metadata Date": rng.choice(("", "2023-06-01T04:12:00Z")),
            "Repository": "Metropolitan Museum of Art, New York, NY",
            "Tags": "|".join(terms),
            "Tags AAT URL": "|".join(aat for aat, _ in urls),
            "Tags Wikidata URL": "|".join(wiki for _, wiki in urls),
        }
        yield {column: cells.get(column, "") for column in MET_COLUMNS}


def write_csv(
    path: Path | str,
    rows: Iterable[Mapping[str, str]],
    *,
    header: Sequence[str] = MET_COLUMNS,
    bom: bool = False,
    encoding: str = "utf-8",
) -> int:
    """Write rows (header -> cell; missing cells empty) as the Met writes its CSV. Returns rows."""
    count = 0
    with open(path, "w", encoding=encoding, newline="") as out:
        if bom:
            out.write("\ufeff")
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        for row in rows:
            writer.writerow([row.get(column, "") for column in header])
            count += 1
    return count


def write_met_csv(path: Path | str, n_rows: int, *, seed: int = 0, bom: bool = False) -> int:
    """Write a generated full-shape MetObjects.csv of `n_rows` rows."""
    return write_csv(path, met_rows(n_rows, seed=seed), bom=bom)


def _bool(value: Any) -> str:
    return "True" if value else "False"


def record_to_csv_row(record: Mapping[str, Any]) -> dict[str, str]:
    """Map a Met API object record (as the API serves it) to the MetObjects.csv row the Met
    would publish for it: pipe-joined constituents and tags, `True`/`False` flags."""
    constituents = record.get("constituents") or []
    tags = record.get("tags") or []

    def joined(key: str) -> str:
        return "|".join(str(c.get(key) or "") for c in constituents)

    row = {
        "Object Number": record.get("accessionNumber", ""),
        "Is Highlight": _bool(record.get("isHighlight")),
        "Is Timeline Work": _bool(record.get("isTimelineWork")),
        "Is Public Domain": _bool(record.get("isPublicDomain")),
        "Object ID": str(record["objectID"]),
        "Gallery Number": record.get("GalleryNumber", ""),
        "Department": record.get("department", ""),
        "AccessionYear": str(record.get("accessionYear", "")),
        "Object Name": record.get("objectName", ""),
        "Title": record.get("title", ""),
        "Culture": record.get("culture", ""),
        "Period": record.get("period", ""),
        "Artist Role": joined("role") or record.get("artistRole", ""),
        "Artist Display Name": joined("name") or record.get("artistDisplayName", ""),
        "Artist Gender": joined("gender") or record.get("artistGender", ""),
        "Object Date": record.get("objectDate", ""),
        "Object Begin Date": str(record.get("objectBeginDate", "")),
        "Object End Date": str(record.get("objectEndDate", "")),
        "Medium": record.get("medium", ""),
        "Dimensions": record.get("dimensions", ""),
        "Credit Line": record.get("creditLine", ""),
        "Classification": record.get("classification", ""),
        "Link Resource": record.get("linkResource", ""),
        "Metadata Date": record.get("metadataDate", ""),
        "Repository": record.get("repository", ""),
        "Tags": "|".join(t.get("term", "") for t in tags),
        "Tags AAT URL": "|".join(t.get("AAT_URL") or "" for t in tags),
        "Tags Wikidata URL": "|".join(t.get("Wikidata_URL") or "" for t in tags),
    }
    return {column: str(row.get(column, "") or "") for column in MET_COLUMNS}


def main(argv: Sequence[str] | None = None) -> None:
    """CLI: write a generated CSV."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("out", type=Path)
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bom", action="store_true")
    args = parser.parse_args(argv)
    print(write_met_csv(args.out, args.rows, seed=args.seed, bom=args.bom))


if __name__ == "__main__":
    main()
