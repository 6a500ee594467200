"""`facetrust keys create|list|revoke` and `facetrust serve --help`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from facetrust.cli.main import cli
from facetrust.gallery import Gallery
from facetrust.service import ApiKeys, SqliteApiKeyStore

from .conftest import make_gallery_folder


def test_keys_create_list_revoke(tmp_path: Path) -> None:
    make_gallery_folder(tmp_path)
    runner = CliRunner()
    gallery = ["--gallery", str(tmp_path)]
    create = ["keys", "create", "--role", "operator", "--name", "gate 3"]
    created = runner.invoke(cli, [*create, *gallery])
    assert created.exit_code == 0, created.output
    key = created.stdout.strip()
    assert key.startswith("ft_") and "shown only this once" in created.stderr
    with Gallery.find(str(tmp_path)) as opened:
        checker = ApiKeys.for_gallery(opened, SqliteApiKeyStore(tmp_path / "api-keys.db"))
    record = checker.authenticate(key)
    assert record is not None and record.role.value == "operator"

    listed = json.loads(runner.invoke(cli, ["keys", "list", "--gallery", str(tmp_path)]).stdout)
    assert [k["key_id"] for k in listed] == [record.key_id]
    assert key not in json.dumps(listed)

    revoked = runner.invoke(cli, ["keys", "revoke", record.key_id, "--gallery", str(tmp_path)])
    assert revoked.exit_code == 0 and json.loads(revoked.stdout)["revoked_at"]
    assert checker.authenticate(key) is None
    again = runner.invoke(cli, ["keys", "revoke", record.key_id, "--gallery", str(tmp_path)])
    assert again.exit_code == 2 and again.stderr.startswith("error: No active API key")


def test_keys_create_refuses_an_unknown_role(tmp_path: Path) -> None:
    make_gallery_folder(tmp_path)
    result = CliRunner().invoke(
        cli, ["keys", "create", "--role", "root", "--name", "x", "--gallery", str(tmp_path)]
    )
    assert result.exit_code == 2 and "'root' is not one of" in result.output


def test_serve_refuses_a_missing_gallery_with_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["serve", "--gallery", str(tmp_path / "none")])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: No gallery config")


def test_serve_refuses_a_gallery_without_its_key_with_one_line(tmp_path: Path) -> None:
    make_gallery_folder(tmp_path)
    (tmp_path / "gallery.key").unlink()
    result = CliRunner().invoke(cli, ["serve", "--gallery", str(tmp_path)], env={
        "FACETRUST_MASTER_KEY": ""})
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and "Traceback" not in result.output


def facetrust(*args: str) -> subprocess.CompletedProcess[str]:
    """The `facetrust` command in a process of its own (as a shell runs it)."""
    return subprocess.run(
        [sys.executable, "-c", "from facetrust.cli.main import cli; cli()", *args],
        capture_output=True, text=True, check=False,
    )


@pytest.mark.slow  # runs the installed command in subprocesses
def test_keys_created_and_revoked_on_the_command_line_are_audited(tmp_path: Path) -> None:
    make_gallery_folder(tmp_path)
    created = facetrust("keys", "create", "--role", "auditor", "--name", "audit desk",
                        "--json", "--gallery", str(tmp_path))
    assert created.returncode == 0, created.stderr
    record = json.loads(created.stdout)
    revoked = facetrust("keys", "revoke", record["key_id"], "--gallery", str(tmp_path))
    assert revoked.returncode == 0, revoked.stderr
    with Gallery.find(str(tmp_path)) as gallery:
        made = list(gallery.audit.events(kind="apikey.create"))
        gone = list(gallery.audit.events(kind="apikey.revoke"))
    assert [(e.fields["key_id"], e.fields["role"], e.fields["name"]) for e in made] == [
        (record["key_id"], "auditor", "audit desk")]
    assert [e.fields["key_id"] for e in gone] == [record["key_id"]]
    assert made[0].actor == gone[0].actor and made[0].actor.startswith("cli:")
    assert record["key"].split("_", 2)[2] not in json.dumps([e.fields for e in made])
