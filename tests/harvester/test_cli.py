"""The `sync` and `status` commands as a user runs them: real subprocesses, exit codes, and
one-line errors."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from harvester_support import harvester_env

from met_harvester.testing import FakeMetAPI

SYNC_OPTIONS = (
    "--data-dir", "--api-url", "--rate", "--concurrency", "--timeout", "--user-agent",
    "--config", "--full", "--limit", "--object-ids", "--departments", "--images",
    "--no-images", "--image-variant", "--additional-images", "--image-rate",
    "--image-concurrency", "--image-hosts", "--max-image-bytes", "--priority",
)  # fmt: skip


def env(**extra: str) -> dict[str, str]:
    """The caller's environment without MET_HARVESTER_*, plus fast retries and `extra`."""
    fast = {"MET_HARVESTER_RETRY_WAIT": "0.01", "MET_HARVESTER_RETRY_WAIT_MAX": "0.02"}
    return harvester_env(**fast, COLUMNS="200") | extra


def cli(*args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "met_harvester", *args],
        capture_output=True,
        text=True,
        env=env(**extra_env),
        timeout=120,
    )


async def acli(*args: str, **extra_env: str) -> tuple[int, str, str]:
    """Run the CLI while this event loop keeps serving the fake API."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "met_harvester",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env(**extra_env),
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    """Exit `code`; stderr ends with one `met-harvester: error:` line (log lines may precede it)."""
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if not line.startswith("{")]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("met-harvester: error: ")
    for word in words:
        assert word in lines[0]


def test_help_documents_every_option() -> None:
    result = cli("sync", "--help")
    assert result.returncode == 0
    for option in SYNC_OPTIONS:
        assert option in result.stdout, option
    top = cli("--help")
    assert "sync" in top.stdout and "status" in top.stdout
    assert "--json" in cli("status", "--help").stdout


async def test_sync_then_status_with_env_and_config(tmp_path: Path, fake_api: FakeMetAPI) -> None:
    config = tmp_path / "harvester.toml"
    config.write_text("rate = 3000.0\nconcurrency = 6\nimages = false\nbatch_size = 25\n")
    data_dir = tmp_path / "data"
    code, out, err = await acli(
        "sync", "--config", str(config), "--data-dir", str(data_dir),
        MET_HARVESTER_API_URL=fake_api.api_url,
    )  # fmt: skip
    assert code == 0, err
    total = len(fake_api.collection.object_ids)
    assert f"sync full completed: fetched {total} (new {total}" in out
    code, out, err = await acli("status", "--json", "--data-dir", str(data_dir))
    assert code == 0, err
    status = json.loads(out)
    for key in ("objects", "withdrawn", "quarantined", "failures", "missing", "tags"):
        assert isinstance(status[key], int), key
    assert status["objects"] == total and status["tags"] > 0
    assert status["last_sync"]["mode"] == "full"
    assert status["last_sync"]["status"] == "completed"
    assert status["last_sync"]["counts"]["new"] == total
    assert status["rate"]["ceiling"] == 3000.0
    assert status["eta_seconds"] == 0
    code, out, _ = await acli("status", "--data-dir", str(data_dir))
    assert code == 0 and "objects" in out and "last sync" in out
    # second pass: incremental; --object-ids and --departments parse
    code, out, err = await acli(
        "sync", "--config", str(config), "--data-dir", str(data_dir), "--api-url",
        fake_api.api_url, "--object-ids", f"{fake_api.collection.object_ids[0]}",
    )  # fmt: skip
    assert code == 0, err
    assert "sync ids completed: fetched 1 " in out


def test_bad_option_values_give_one_line(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    assert_one_line_error(cli("sync", "--data-dir", data, "--rate", "-1"), 2, "'rate'")
    assert_one_line_error(
        cli("sync", "--data-dir", data, "--object-ids", "1,x"), 2, "--object-ids", "'x'"
    )
    assert_one_line_error(
        cli("sync", "--data-dir", data, "--image-variant", "huge"), 2, "image_variant"
    )
    assert_one_line_error(cli("sync", "--data-dir", data, "--priority", "pd,bogus"), 2, "bogus")
    assert_one_line_error(
        cli("sync", "--data-dir", data, MET_HARVESTER_CONCURRENCY="many"), 2, "concurrency"
    )
    typo = tmp_path / "typo.toml"
    typo.write_text("rat = 5\n")
    assert_one_line_error(cli("sync", "--config", str(typo)), 2, "rat")
    assert_one_line_error(cli("sync", "--config", str(tmp_path / "absent.toml")), 2, "absent")
    assert not (tmp_path / "data").exists()  # nothing was started


def test_unwritable_data_dir_is_fatal(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    result = cli("sync", "--data-dir", str(blocker / "data"), "--api-url", "http://127.0.0.1:9")
    assert_one_line_error(result, 1, "data dir")


def test_unreachable_api_is_fatal(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a loopback port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = cli(
        "sync", "--data-dir", str(tmp_path / "data"), "--api-url",
        f"http://127.0.0.1:{port}/public/collection/v1", "--max-attempts", "2", "--timeout", "2",
        "--no-images", "--log-level", "ERROR",
    )  # fmt: skip
    assert_one_line_error(result, 1, "objects")
    status = cli("status", "--json", "--data-dir", str(tmp_path / "data"))
    assert json.loads(status.stdout)["last_sync"]["status"] == "failed"


def test_status_without_a_mirror(tmp_path: Path) -> None:
    assert_one_line_error(cli("status", "--data-dir", str(tmp_path / "none")), 1, "no mirror")


@pytest.mark.parametrize("entry", [["-m", "met_harvester"]])
def test_python_dash_m(entry: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, *entry, "--help"], capture_output=True, text=True, env=env(), timeout=60
    )
    assert result.returncode == 0 and "sync" in result.stdout


def test_progress_reporters_show_rate_and_eta(caplog: pytest.LogCaptureFixture) -> None:
    import io
    import logging

    from rich.console import Console

    from met_harvester.progress import LogProgress, RichProgress, format_eta, make_progress

    assert format_eta(None) == "?"
    assert format_eta(12) == "12s"
    assert format_eta(250) == "4m 10s"
    assert format_eta(7500) == "2h 05m"
    assert format_eta(5.8 * 86400) == "5d 19h"
    assert isinstance(make_progress(stream=io.StringIO()), LogProgress)  # not a terminal

    caplog.set_level(logging.INFO, logger="met_harvester.progress")
    plain = LogProgress(interval=0.0)
    plain.start("records", 10)
    plain.advance("records", 4)
    plain.note("records", "1.5 req/s")
    plain.advance("records", 1)
    plain.finish("records")
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "records: starting, 10 to do"
    assert lines[1].startswith("records: 4/10 (40.0%)") and "/s" in lines[1] and "eta" in lines[1]
    assert lines[-1].startswith("records: done, 5/10 (50.0%)") and lines[-1].endswith("1.5 req/s")

    out = io.StringIO()
    bar = RichProgress(Console(file=out, force_terminal=True, width=160))
    bar.start("records", 100)
    bar.advance("records", 30)
    bar.note("records", "0.9 req/s, eta 1m 17s")
    bar.finish("records")
    bar.close()
    drawn = out.getvalue()
    assert "records" in drawn and "100/100" in drawn and "eta 1m 17s" in drawn


def test_second_writer_is_refused(tmp_path: Path) -> None:
    from met_harvester.datadir import DataDirLock

    data = tmp_path / "data"
    data.mkdir()
    with DataDirLock(data, command="daemon"):
        result = cli("sync", "--data-dir", str(data), "--api-url", "http://127.0.0.1:9")
    assert_one_line_error(result, 3, "locked")
