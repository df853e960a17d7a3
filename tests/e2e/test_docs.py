"""Every CLI command and option is documented in README.md or docs/, and has --help."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer

from met_harvester.cli import _register_commands, app

ROOT = Path(__file__).resolve().parents[2]
VISION_MODULES = (
    "prepare", "fit", "compare", "explain", "audit", "predict", "embed", "demo", "weights", "snapshot",
)  # fmt: skip
# LightningCLI adds hundreds of trainer/optimizer options; docs cover the project's own ones.
FIT_OWN_PREFIXES = (
    "--model.",
    "--data.",
    "--run_dir",
    "--runs_root",
    "--ckpt_path",
    "--name",
    "--test",
    "--fit",
)  # --early_stopping.* and --checkpoint.* are Lightning's own callbacks' options
IGNORED = {"--help", "-h", "--version", "--print_config", "--config"}


def _docs_text() -> str:
    parts = [(ROOT / "README.md").read_text()]
    parts += [p.read_text() for p in sorted((ROOT / "docs").glob("*.md"))]
    return "\n".join(parts)


def _harvester_commands() -> dict[str, Any]:
    _register_commands()
    group = typer.main.get_command(app)
    return dict(group.commands)  # type: ignore[attr-defined]


def test_every_harvester_command_and_option_is_documented() -> None:
    docs = _docs_text()
    missing: list[str] = []
    for name, command in _harvester_commands().items():
        if f"met-harvester {name}" not in docs:
            missing.append(f"command `met-harvester {name}`")
        for param in command.params:
            for opt in getattr(param, "opts", []) + getattr(param, "secondary_opts", []):
                if opt.startswith("--") and opt not in IGNORED and opt not in docs:
                    missing.append(f"`met-harvester {name} {opt}`")
    assert not missing, "undocumented: " + ", ".join(missing)


@pytest.mark.parametrize("name", sorted(_harvester_commands()))
def test_every_harvester_command_has_help(name: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "met_harvester", name, "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout
    command = _harvester_commands()[name]
    for param in command.params:
        if getattr(param, "param_type_name", "") == "option":
            assert param.help, f"met-harvester {name} {param.opts[0]} has no help text"


def _documented(option: str, docs: str) -> bool:
    """`--model.lr` counts as documented as itself or as `lr` in a table of the model's options."""
    if option in docs:
        return True
    group, _, name = option[2:].partition(".")
    return group in ("model", "data") and f"`{name}`" in docs


def _vision_options(module: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-m", f"met_vision.{module}", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, f"met_vision.{module} --help failed: {result.stderr[-500:]}"
    options = sorted(set(re.findall(r"(?<![\w-])(--[a-z][\w.-]*)", result.stdout)))
    if module == "fit":
        options = [o for o in options if o.startswith(FIT_OWN_PREFIXES)]
    return [o for o in options if o not in IGNORED and not o.endswith(".help")]


@pytest.mark.parametrize("module", VISION_MODULES)
def test_every_vision_command_has_help_and_documented_options(module: str) -> None:
    docs = _docs_text()
    assert f"met_vision.{module}" in docs, f"python -m met_vision.{module} is not documented"
    missing = [o for o in _vision_options(module) if not _documented(o, docs)]
    assert not missing, f"met_vision.{module}: undocumented options {missing}"


def test_cli_reference_page_is_current() -> None:
    from met_harvester.cli_reference import render

    page = (ROOT / "docs" / "cli.md").read_text()
    assert page == render(), "regenerate: python -m met_harvester.cli_reference > docs/cli.md"
