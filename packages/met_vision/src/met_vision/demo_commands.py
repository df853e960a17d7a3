"""The demo's stages as subprocesses: each is the real command a user would type
(`run_stage`), and the fake Met API it harvests from (`FakeApiProcess`)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

PY = sys.executable


class DemoError(RuntimeError):
    """A stage failed; the message names the stage and the command."""


def run_stage(stage: str, cmd: list[str], log: Path, *, capture: bool = False) -> str:
    """Run one stage's command, tee its output to `log`, raise DemoError on failure."""
    print(f"\n== {stage}: {' '.join(cmd)}", flush=True)
    started = time.time()
    with log.open("a") as fh:
        fh.write(f"\n== {stage}: {' '.join(cmd)}\n")
        fh.flush()
        proc = subprocess.run(
            cmd,
            stdout=subprocess.PIPE if capture else None,
            stderr=fh if capture else None,
            text=True,
            check=False,
        )
    if proc.returncode != 0:
        raise DemoError(f"stage {stage!r} failed (exit {proc.returncode}): {' '.join(cmd)}")
    print(f"   {stage} done in {time.time() - started:.1f} s", flush=True)
    return proc.stdout or ""


class FakeApiProcess:
    """The fake Met API as a subprocess on 127.0.0.1 (an ephemeral port)."""

    def __init__(
        self,
        objects: int,
        seed: int,
        bias: float | None,
        truth_out: Path,
        unmarked_tags: Sequence[str] = (),
    ) -> None:
        cmd = [
            PY,
            "-m",
            "met_harvester",
            "fake-api",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--objects",
            str(objects),
            "--seed",
            str(seed),
            "--truth-out",
            str(truth_out),
        ]
        if bias is not None:
            cmd += ["--bias", str(bias)]
        if unmarked_tags:
            cmd += ["--unmarked-tags", ",".join(unmarked_tags)]
        print(f"\n== fake API: {' '.join(cmd)}", flush=True)
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if "listening on " not in line:
            self.stop()
            raise DemoError(f"the fake API did not start (it printed {line!r})")
        self.api_url = line.split("listening on ", 1)[1]
        self.image_host = self.api_url.split("//", 1)[1].split("/", 1)[0]
        print(f"   fake API at {self.api_url}", flush=True)

    def stop(self) -> None:
        """Terminate the server process."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
