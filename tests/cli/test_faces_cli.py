"""The command line: exit codes, JSON output, clean errors, help and docs for every command."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from facetrust.cli.main import cli

CLI_DOCS = Path(__file__).parent.parent.parent / "docs" / "cli.md"


@pytest.fixture()
def runner() -> CliRunner:
    return CliRunner()


def test_verify_exits_0_on_match_with_human_readable_output(
    runner: CliRunner, photos: dict[str, list[Path]]
) -> None:
    a, b = photos["Colin_Powell"][:2]
    result = runner.invoke(cli, ["verify", str(a), str(b)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("MATCH: distance 0.")
    assert "operating point" in result.output


def test_verify_exits_1_on_no_match_with_json(
    runner: CliRunner, photos: dict[str, list[Path]]
) -> None:
    a, b = photos["Colin_Powell"][0], photos["Kofi_Annan"][0]
    result = runner.invoke(cli, ["verify", "--json", str(a), str(b)])
    assert result.exit_code == 1, result.output
    record = json.loads(result.output)
    assert record["match"] is False
    assert record["distance"] > record["threshold"]
    assert record["model_id"] == "dlib-resnet-v1"


def test_verify_exits_2_with_one_clean_line_on_error(
    runner: CliRunner, photos: dict[str, list[Path]], multi_face_photo: Path
) -> None:
    result = runner.invoke(
        cli, ["verify", str(multi_face_photo), str(photos["Hu_Jintao"][0]), "--face", "single"]
    )
    assert result.exit_code == 2
    assert result.output.startswith("error: The image holds 2 faces")
    assert "Traceback" not in result.output


def test_installed_command_prints_no_traceback(tmp_path: Path) -> None:
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"\x00" * 100)
    script = "from facetrust.cli.main import cli; cli()"
    done = subprocess.run(
        [sys.executable, "-c", script, "verify", str(junk), str(junk)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_detect_writes_one_json_line_per_image(
    runner: CliRunner, photos: dict[str, list[Path]], tmp_path: Path
) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    images = [str(photos["Hu_Jintao"][0]), str(bad)]
    result = runner.invoke(cli, ["detect", *images])
    assert result.exit_code == 2
    first, second = (json.loads(line) for line in result.output.splitlines())
    assert len(first["faces"]) == 1
    assert set(first["faces"][0]) == {"box", "confidence", "landmarks", "quality"}
    assert second["error_type"] == "NotAnImage"


def test_embed_writes_templates(runner: CliRunner, photos: dict[str, list[Path]]) -> None:
    result = runner.invoke(cli, ["embed", "--workers", "1", str(photos["Hu_Jintao"][0])])
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    embedding = record["faces"][0]["embedding"]
    assert embedding["model_id"] == "dlib-resnet-v1" and len(embedding["vector"]) == 128


def _commands(group: click.Group, prefix: str = "facetrust") -> Iterator[tuple[str, click.Command]]:
    for name, command in sorted(group.commands.items()):
        full = f"{prefix} {name}"
        yield full, command
        if isinstance(command, click.Group):
            yield from _commands(command, full)


@pytest.mark.parametrize("name,command", list(_commands(cli)))
def test_every_command_has_help_and_is_documented(
    runner: CliRunner, name: str, command: click.Command
) -> None:
    assert command.help, f"{name} has no help text"
    args = name.split()[1:] + ["--help"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0 and "Usage:" in result.output
    assert f"`{name}" in CLI_DOCS.read_text(), f"{name} is not documented in docs/cli.md"
