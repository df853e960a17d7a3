"""Structured JSON logs off a terminal, readable lines on one."""

from __future__ import annotations

import io
import json
import logging

import pytest

from met_harvester.logs import configure_logging


def test_json_lines_carry_extra_fields() -> None:
    out = io.StringIO()
    configure_logging("INFO", stream=out)  # StringIO is not a TTY: JSON
    log = logging.getLogger("met_harvester.sync")
    log.info("stored record", extra={"object_id": 436535, "status": 200})
    log.debug("hidden at INFO")
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    event = json.loads(lines[0])
    assert event["message"] == "stored record"
    assert event["object_id"] == 436535
    assert event["level"] == "info"
    assert event["logger"] == "met_harvester.sync"


def test_readable_lines_and_level() -> None:
    out = io.StringIO()
    configure_logging("debug", json_lines=False, stream=out)
    logging.getLogger("met_harvester.images").warning("refused", extra={"object_id": 7})
    text = out.getvalue()
    assert "warning" in text and "refused" in text and "object_id=7" in text
    with pytest.raises(ValueError, match="unknown log level"):
        configure_logging("LOUD", stream=out)
