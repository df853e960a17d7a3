"""The Scrapy baseline of `bench/harvest.py`: a spider that lists the fake Met API's ids and
stores each record's raw JSON into SQLite, committing every 200 rows, like the harvester.

Needs Scrapy (`pip install scrapy`; an optional bench dependency, not installed by
`make test`). Run by bench/harvest.py in its own process:

    python bench/harvest_scrapy.py API_URL DATA_DIR CONCURRENCY

Prints one JSON line: objects, wall_s, cpu_s, peak_rss_mb.
"""

from __future__ import annotations

import json
import resource
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any


def main(api_url: str, data_dir: str, concurrency: int) -> None:
    """Crawl `api_url` with Scrapy into `data_dir`/scrapy.sqlite; print the measurements."""
    import scrapy
    from scrapy.crawler import CrawlerProcess

    db_path = Path(data_dir) / "scrapy.sqlite"

    class SqlitePipeline:
        def open_spider(self) -> None:
            self.conn = sqlite3.connect(db_path)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.execute(
                "CREATE TABLE IF NOT EXISTS objects (object_id INTEGER PRIMARY KEY, "
                "raw_json TEXT NOT NULL)"
            )
            self.rows: list[tuple[int, str]] = []
            self.count = 0

        def process_item(self, item: dict[str, Any]) -> dict[str, Any]:
            self.rows.append((item["object_id"], item["raw_json"]))
            if len(self.rows) >= 200:
                self._flush()
            return item

        def _flush(self) -> None:
            self.conn.executemany("INSERT OR REPLACE INTO objects VALUES (?, ?)", self.rows)
            self.conn.commit()
            self.count += len(self.rows)
            self.rows = []

        def close_spider(self) -> None:
            self._flush()
            self.conn.close()

    class MetSpider(scrapy.Spider):
        name = "met"
        start_urls = (f"{api_url}/objects",)

        def parse(self, response: Any) -> Any:  # the listing
            for object_id in json.loads(response.text)["objectIDs"]:
                yield scrapy.Request(f"{api_url}/objects/{object_id}", callback=self.parse_object)

        def parse_object(self, response: Any) -> Any:
            record = json.loads(response.text)
            yield {"object_id": record["objectID"], "raw_json": response.text}

    process = CrawlerProcess(
        settings={
            "CONCURRENT_REQUESTS": concurrency,
            "CONCURRENT_REQUESTS_PER_DOMAIN": concurrency,
            "DOWNLOAD_DELAY": 0,
            "AUTOTHROTTLE_ENABLED": False,
            "ROBOTSTXT_OBEY": False,
            "LOG_LEVEL": "ERROR",
            "TELNETCONSOLE_ENABLED": False,
            "ITEM_PIPELINES": {SqlitePipeline: 100},
        }
    )
    start_cpu = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    process.crawl(MetSpider)
    process.start()
    wall = time.perf_counter() - start
    end_cpu = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (end_cpu.ru_utime - start_cpu.ru_utime) + (end_cpu.ru_stime - start_cpu.ru_stime)
    with sqlite3.connect(db_path) as conn:
        objects = conn.execute("SELECT COUNT(*) FROM objects").fetchone()[0]
    figures = {
        "path": "scrapy",
        "objects": objects,
        "wall_s": wall,
        "cpu_s": cpu,
        "peak_rss_mb": end_cpu.ru_maxrss / 1024,
        "client_max_1s": 0,
    }
    print(json.dumps(figures), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
