"""Numbered schema migrations. Each is applied once, in its own transaction, with its row in
`schema_migrations`. Never edit a released migration: add a new one. Documented in docs/schema.md."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Migration:
    """One schema step: a number, a name and the SQL script that applies it."""

    number: int
    name: str
    sql: str


M0001_OBJECTS = """
CREATE TABLE objects (
    object_id            INTEGER PRIMARY KEY,
    raw_json             TEXT NOT NULL,          -- the record exactly as received
    content_sha256       TEXT NOT NULL,          -- sha256 of the canonical JSON (sorted keys)
    metadata_date        TEXT,                   -- the record's metadataDate, as sent
    first_seen_at        TEXT NOT NULL,          -- ISO-8601 UTC
    fetched_at           TEXT NOT NULL,
    withdrawn_at         TEXT,                   -- set when the id left the listing; rows never deleted
    department           TEXT,
    classification       TEXT,
    object_name          TEXT,
    title                TEXT,
    culture              TEXT,
    period               TEXT,
    is_public_domain     INTEGER,
    is_highlight         INTEGER,
    artist_display_name  TEXT,
    artist_gender        TEXT,
    object_begin_date    INTEGER,
    object_end_date      INTEGER,
    primary_image        TEXT,
    primary_image_small  TEXT,
    additional_images    TEXT,                   -- JSON array of URLs
    accession_year       TEXT,
    accession_number     TEXT
);
CREATE INDEX objects_department ON objects(department);
CREATE INDEX objects_classification ON objects(classification);
CREATE INDEX objects_public_domain ON objects(is_public_domain);
CREATE INDEX objects_withdrawn ON objects(withdrawn_at);

CREATE TABLE object_versions (
    version_id      INTEGER PRIMARY KEY,
    object_id       INTEGER NOT NULL,
    raw_json        TEXT NOT NULL,               -- the previous record
    content_sha256  TEXT NOT NULL,
    metadata_date   TEXT,
    fetched_at      TEXT NOT NULL,               -- when the previous record was fetched
    replaced_at     TEXT NOT NULL,
    source          TEXT NOT NULL DEFAULT 'api'  -- 'api' or 'csv'
);
CREATE INDEX object_versions_object ON object_versions(object_id);

CREATE TABLE tags (
    tag_id        INTEGER PRIMARY KEY,
    term          TEXT NOT NULL UNIQUE,
    aat_url       TEXT,
    wikidata_url  TEXT
);

CREATE TABLE object_tags (
    object_id  INTEGER NOT NULL,
    tag_id     INTEGER NOT NULL REFERENCES tags(tag_id),
    source     TEXT NOT NULL DEFAULT 'api',      -- 'api' or 'csv'
    PRIMARY KEY (object_id, tag_id, source)
);
CREATE INDEX object_tags_tag ON object_tags(tag_id);

CREATE TABLE constituents (
    constituent_id  INTEGER PRIMARY KEY,
    name            TEXT,
    ulan_url        TEXT,
    wikidata_url    TEXT,
    gender          TEXT
);

CREATE TABLE object_constituents (
    object_id       INTEGER NOT NULL,
    constituent_id  INTEGER NOT NULL,
    role            TEXT NOT NULL DEFAULT '',
    position        INTEGER NOT NULL,
    PRIMARY KEY (object_id, position)
);
CREATE INDEX object_constituents_constituent ON object_constituents(constituent_id);

CREATE TABLE departments (
    department_id  INTEGER PRIMARY KEY,
    display_name   TEXT NOT NULL,
    fetched_at     TEXT NOT NULL
);

CREATE TABLE sync_runs (
    run_id       INTEGER PRIMARY KEY,
    started_at   TEXT NOT NULL,
    finished_at  TEXT,
    mode         TEXT NOT NULL,                  -- full | incremental | ids | limit
    status       TEXT NOT NULL,                  -- running | completed | interrupted | failed
    counts_json  TEXT NOT NULL DEFAULT '{}',     -- listed, fetched, new, updated, unchanged, missing, ...
    error        TEXT
);

CREATE TABLE fetch_failures (
    object_id      INTEGER PRIMARY KEY,
    attempts       INTEGER NOT NULL,
    last_status    INTEGER,                      -- HTTP status, NULL for network errors
    last_error     TEXT NOT NULL,
    first_failed_at TEXT NOT NULL,
    last_failed_at TEXT NOT NULL,
    next_retry_at  TEXT NOT NULL
);

CREATE TABLE missing_objects (                   -- 404 / "Not a valid object": not failures
    object_id        INTEGER PRIMARY KEY,
    http_status      INTEGER NOT NULL,
    message          TEXT,
    first_seen_at    TEXT NOT NULL,
    last_checked_at  TEXT NOT NULL
);

CREATE TABLE quarantine (                        -- records that failed validation
    object_id    INTEGER PRIMARY KEY,
    raw_body     TEXT NOT NULL,
    error        TEXT NOT NULL,
    http_status  INTEGER,
    received_at  TEXT NOT NULL
);

CREATE TABLE harvester_state (                   -- small key/value facts: learned rates, ...
    key         TEXT PRIMARY KEY,
    value       TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
"""

M0002_IMAGES = """
CREATE TABLE images (
    image_id       INTEGER PRIMARY KEY,
    object_id      INTEGER NOT NULL,
    role           TEXT NOT NULL CHECK (role IN ('primary', 'additional')),
    position       INTEGER NOT NULL DEFAULT 0,   -- 0 for primary; index in additionalImages
    variant        TEXT NOT NULL,                -- 'small' (primaryImageSmall) | 'original'
    url            TEXT NOT NULL,
    sha256         TEXT,                         -- blob at images/<2>/<2>/<sha256> when status='ok'
    bytes          INTEGER,
    width          INTEGER,
    height         INTEGER,
    format         TEXT,                         -- Pillow format: JPEG, PNG, ...
    mode           TEXT,                         -- Pillow mode: RGB, L, CMYK, ...
    fetched_at     TEXT,
    status         TEXT NOT NULL DEFAULT 'pending'
                   CHECK (status IN ('pending', 'ok', 'failed', 'refused')),
    error          TEXT,
    attempts       INTEGER NOT NULL DEFAULT 0,
    next_retry_at  TEXT,
    etag           TEXT,
    last_modified  TEXT,
    is_current     INTEGER NOT NULL DEFAULT 1,   -- 0: an older link kept as history
    superseded_at  TEXT
);
CREATE UNIQUE INDEX images_current_slot
    ON images(object_id, role, position, variant) WHERE is_current = 1;
CREATE INDEX images_sha256 ON images(sha256);
CREATE INDEX images_status ON images(status);
"""

M0003_CSV = """
CREATE TABLE csv_objects (
    object_id            INTEGER PRIMARY KEY,
    raw_row              TEXT NOT NULL,          -- JSON object: CSV header -> cell, as read
    row_sha256           TEXT NOT NULL,
    metadata_date        TEXT,
    first_seen_at        TEXT NOT NULL,
    imported_at          TEXT NOT NULL,
    source_file          TEXT,
    department           TEXT,
    classification       TEXT,
    object_name          TEXT,
    title                TEXT,
    culture              TEXT,
    period               TEXT,
    is_public_domain     INTEGER,
    is_highlight         INTEGER,
    artist_display_name  TEXT,
    artist_gender        TEXT,
    object_begin_date    INTEGER,
    object_end_date      INTEGER,
    accession_year       TEXT,
    accession_number     TEXT,
    tags                 TEXT                    -- JSON array of terms
);
CREATE INDEX csv_objects_public_domain ON csv_objects(is_public_domain);

CREATE TABLE csv_object_versions (
    version_id   INTEGER PRIMARY KEY,
    object_id    INTEGER NOT NULL,
    raw_row      TEXT NOT NULL,
    row_sha256   TEXT NOT NULL,
    imported_at  TEXT NOT NULL,
    replaced_at  TEXT NOT NULL
);
CREATE INDEX csv_object_versions_object ON csv_object_versions(object_id);

CREATE TABLE csv_imports (
    import_id    INTEGER PRIMARY KEY,
    path         TEXT NOT NULL,
    started_at   TEXT NOT NULL,
    finished_at  TEXT,
    counts_json  TEXT NOT NULL DEFAULT '{}',
    errors_json  TEXT NOT NULL DEFAULT '[]'
);
"""

M0004_TRUTH = """
ALTER TABLE objects ADD COLUMN typed_issues TEXT;    -- JSON list: why a typed column is NULL
ALTER TABLE quarantine ADD COLUMN attempts INTEGER NOT NULL DEFAULT 1;
ALTER TABLE quarantine ADD COLUMN first_received_at TEXT;
ALTER TABLE quarantine ADD COLUMN next_retry_at TEXT;  -- NULL: due now
ALTER TABLE sync_runs ADD COLUMN changes_from TEXT;   -- changes after this are in the mirror
ALTER TABLE object_versions ADD COLUMN raw_json_zlib BLOB;  -- set: raw_json is '' (compressed)

CREATE TABLE listing_checks (                    -- every id listing a pass used, judged
    check_id          INTEGER PRIMARY KEY,
    run_id            INTEGER,
    checked_at        TEXT NOT NULL,
    kind              TEXT NOT NULL,             -- full | changed
    ids               INTEGER NOT NULL,          -- distinct ids in objectIDs
    total             INTEGER,                   -- the listing's own `total`
    previous_trusted  INTEGER,                   -- ids of the last trustworthy full listing
    trusted           INTEGER NOT NULL,          -- 1: complete and not shrunk past the margin
    reason            TEXT                       -- why not trusted
);

CREATE TABLE withdrawal_candidates (             -- absent from the last trustworthy listing
    object_id        INTEGER PRIMARY KEY,
    first_absent_at  TEXT NOT NULL,
    check_id         INTEGER NOT NULL
);

CREATE TABLE withdrawal_events (                 -- when and why an object was (un)withdrawn
    event_id   INTEGER PRIMARY KEY,
    object_id  INTEGER NOT NULL,
    at         TEXT NOT NULL,
    action     TEXT NOT NULL CHECK (action IN ('withdrawn', 'restored')),
    reason     TEXT NOT NULL,
    run_id     INTEGER
);
CREATE INDEX withdrawal_events_object ON withdrawal_events(object_id);
"""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "objects", M0001_OBJECTS),
    Migration(2, "images", M0002_IMAGES),
    Migration(3, "csv", M0003_CSV),
    Migration(4, "truth", M0004_TRUTH),
)
