"""The gallery from the shell: a new user's walk-through, and every command documented."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from facetrust.cli.main import cli
from facetrust.faces import Embedding
from facetrust.gallery import Gallery
from installed_command import INSTALLED, installed_runner, shell_env

CLI_DOCS = Path(__file__).parent.parent.parent / "docs" / "cli.md"
SAMPLE_DATA = Path(__file__).parent.parent / "data"
GALLERY_COMMANDS = [
    "init",
    "subject add",
    "subject list",
    "subject show",
    "consent grant",
    "consent withdraw",
    "consent show",
    "enroll",
    "identify",
    "review",
    "forget",
    "retention sweep",
    "index info",
    "index save",
    "audit verify",
    "audit export",
    "audit head",
    "keys rotate",
    "keys rekey-templates",
]


def run(runner: CliRunner, *args: str, code: int = 0) -> str:
    result = runner.invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result.output


def test_walk_through(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    photos = Path(__file__).parent.parent / "data" / "lfw" / "Kofi_Annan"
    runner = CliRunner()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FACETRUST_MASTER_KEY", raising=False)
    monkeypatch.delenv("FACETRUST_GALLERY", raising=False)
    monkeypatch.setenv("FACETRUST_ACTOR", "registrar")
    run(runner, "init")
    assert stat.S_IMODE((tmp_path / "gallery.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "gallery.db").stat().st_mode) == 0o600
    run(runner, "subject", "add", "kofi", "--name", "Kofi A.")
    form = tmp_path / "form.pdf"
    form.write_bytes(b"%PDF signed consent form")
    granted = json.loads(
        run(
            runner,
            "consent",
            "grant",
            "kofi",
            "--purpose",
            "boarding",
            "--days",
            "365",
            "--evidence-ref",
            "FORM-1",
            "--evidence-file",
            str(form),
            "--notice-version",
            "v3",
        )
    )
    assert granted["evidence_sha256"] == hashlib.sha256(form.read_bytes()).hexdigest()
    enrolled = json.loads(run(runner, "enroll", "kofi", str(photos / "Kofi_Annan_0001.jpg")))
    assert len(enrolled["template_ids"]) == 1 and enrolled["photos_stored"] == 0

    refused = runner.invoke(cli, ["identify", str(photos / "Kofi_Annan_0003.jpg")])
    assert refused.exit_code == 2 and "must state its purpose" in refused.output
    no_case = runner.invoke(
        cli, ["identify", str(photos / "Kofi_Annan_0003.jpg"), "--purpose", "boarding"]
    )
    assert no_case.exit_code == 2 and "must name the case it belongs to" in no_case.output
    assert "--case-ref" in no_case.output
    found = json.loads(
        run(
            runner,
            "identify",
            str(photos / "Kofi_Annan_0003.jpg"),
            "--purpose",
            "boarding",
            "--case-ref",
            "CASE-1",
            "--actor",
            "officer",
        )
    )
    assert found["candidates"][0]["subject_id"] == "kofi" and found["requires_human_review"]
    ident = found["identification_id"]
    alice, bob = (
        json.loads(run(runner, "keys", "create", "--role", "operator", "--name", n, "--json"))
        for n in ("alice", "bob")
    )
    first = json.loads(run(runner, "review", ident, "kofi", "--key", alice["key"]))
    assert first["status"] == "pending"
    second = json.loads(run(runner, "review", ident, "kofi", "--key", bob["key"]))
    assert second["status"] == "confirmed"
    assert set(second["confirmed_by"]) == {f"key:{alice['key_id']}", f"key:{bob['key_id']}"}
    verified = run(
        runner,
        "verify",
        str(photos / "Kofi_Annan_0002.jpg"),
        "--subject",
        "kofi",
        "--purpose",
        "boarding",
        "--case-ref",
        "DESK-1",
    )
    assert json.loads(verified)["match"] is True
    wrong = runner.invoke(
        cli,
        [
            "verify",
            str(photos / "Kofi_Annan_0002.jpg"),
            "--subject",
            "kofi",
            "--purpose",
            "access-control",
            "--case-ref",
            "DESK-1",
        ],
    )
    assert wrong.exit_code == 2  # the one answer for unknown and not consented subjects
    assert "No subject 'kofi' with an active consent covering 'access-control'" in wrong.output

    head = json.loads(run(runner, "audit", "head"))
    run(runner, "keys", "rotate")
    run(runner, "keys", "rekey-templates")
    again = json.loads(
        run(
            runner,
            "identify",
            str(photos / "Kofi_Annan_0004.jpg"),
            "--purpose",
            "boarding",
            "--case-ref",
            "CASE-2",
        )
    )
    assert again["candidates"][0]["subject_id"] == "kofi"
    assert "intact" in run(runner, "audit", "verify", "--expect-head", head["anchor"])
    json.loads(run(runner, "consent", "show", "kofi"))
    erased = json.loads(run(runner, "forget", "kofi"))
    assert erased["key_destroyed"]
    run(runner, "identify", str(photos / "Kofi_Annan_0004.jpg"), "--purpose", "boarding",
        "--case-ref", "CASE-3", code=1)
    json.loads(run(runner, "retention", "sweep"))
    exported = run(runner, "audit", "export", "--subject", "kofi")
    kinds = [json.loads(line)["kind"] for line in exported.splitlines()]
    assert kinds[:3] == ["subject.add", "consent.grant", "enrol"]
    # CASE-2 awaited review with kofi its only candidate: nobody can decide it now
    assert kinds[-2:] == ["erase", "identification.closed"]
    assert "verified_by" in exported
    assert "intact" in run(runner, "audit", "verify")
    assert json.loads(run(runner, "subject", "list")) == {"subjects": [], "next_after": None}


def test_index_commands_save_the_index_and_a_restart_loads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sample = Path(__file__).parent.parent / "data" / "lfw"
    runner = CliRunner()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FACETRUST_GALLERY", raising=False)
    monkeypatch.setenv("FACETRUST_ACTOR", "registrar")
    run(runner, "init", "--index-kind", "quantized")
    for folder in sorted(sample.iterdir()):
        subject = folder.name.lower()
        run(runner, "subject", "add", subject)
        run(
            runner,
            "consent",
            "grant",
            subject,
            "--purpose",
            "boarding",
            "--days",
            "30",
            "--evidence-ref",
            f"FORM-{subject}",
            "--notice-version",
            "v1",
            "--evidence-sha256",
            hashlib.sha256(subject.encode()).hexdigest(),
        )
        run(runner, "enroll", subject, *map(str, sorted(folder.glob("*.jpg"))[:2]))
    written = json.loads(run(runner, "index", "save"))["written"]
    assert len(written) == 1 and Path(written[0]).exists()
    (model_id, info), *others = json.loads(run(runner, "index", "info")).items()
    assert not others
    assert info == {**info, "kind": "quantized", "templates": 20, "source": "file"}
    run(runner, "forget", sorted(sample.iterdir())[0].name.lower())
    assert not Path(written[0]).exists()  # erasure destroyed the saved index
    info = json.loads(run(runner, "index", "info"))[model_id]
    assert (info["templates"], info["source"]) == (18, "new")


def test_a_missing_gallery_is_a_clear_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["subject", "list", "--gallery", str(tmp_path)])
    assert result.exit_code == 2 and "facetrust init" in result.output


@pytest.mark.parametrize("command", GALLERY_COMMANDS)
def test_every_gallery_command_has_help_and_is_documented(command: str) -> None:
    result = CliRunner().invoke(cli, [*command.split(), "--help"])
    assert result.exit_code == 0 and "Usage:" in result.output
    group: click.Command | None = cli
    for word in command.split():
        assert isinstance(group, click.Group)
        group = group.commands.get(word)
    assert group is not None and group.help
    assert f"facetrust {command}" in CLI_DOCS.read_text(encoding="utf-8"), command


@pytest.mark.slow  # runs the installed command in subprocesses
def test_reviewers_are_authenticated_keys_through_the_installed_command(
    tmp_path: Path,
    identities: dict[str, list[Path]],
    embeddings: dict[Path, Embedding],
    enrol_all: Callable[..., None],
) -> None:
    """Two-person review from the shell takes two real API keys, never typed names."""
    gallery, _ = Gallery.init_folder(tmp_path)
    with gallery:
        enrol_all(gallery, identities, embeddings)
    env, command = shell_env(tmp_path), INSTALLED

    def facetrust(*args: str, key: str | None = None, code: int = 0) -> str:
        done = subprocess.run(
            [command, *args],
            capture_output=True, text=True, check=False,
            env={**env, **({"FACETRUST_API_KEY": key} if key else {})},
        )
        assert done.returncode == code, done.stdout + done.stderr
        assert "Traceback" not in done.stderr
        return done.stdout if code in (0, 1) else done.stderr

    keys = {
        name: json.loads(facetrust("keys", "create", "--role", role, "--name", name, "--json"))
        for name, role in [
            ("searcher", "operator"), ("alice", "operator"), ("bob", "operator"),
            ("desk", "enroller"),
        ]
    }
    probe = str(identities["Kofi_Annan"][3])
    found = json.loads(facetrust(
        "identify", probe, "--purpose", "boarding", "--case-ref", "C-1",
        key=keys["searcher"]["key"],
    ))
    assert found["actor"] == f"key:{keys['searcher']['key_id']}"
    ident, top = found["identification_id"], found["candidates"][0]["subject_id"]
    review = ("review", ident, top)
    assert "reviewers are authenticated" in facetrust(*review, "--reviewer", "alice", code=2)
    assert "pass your API key" in facetrust(*review, code=2)
    assert "may not call 'review_candidate'" in facetrust(
        *review, key=keys["desk"]["key"], code=2
    )
    assert "unknown, revoked or malformed" in facetrust(*review, key="ft_bogus_key", code=2)
    assert "ran this identification" in facetrust(*review, key=keys["searcher"]["key"], code=2)
    first = json.loads(facetrust(*review, key=keys["alice"]["key"]))
    assert first["status"] == "pending"
    assert "already reviewed" in facetrust(*review, key=keys["alice"]["key"], code=2)
    second = json.loads(facetrust(*review, "--note", "ID card checked", key=keys["bob"]["key"]))
    assert second["status"] == "confirmed"
    assert set(second["confirmed_by"]) == {
        f"key:{keys['alice']['key_id']}", f"key:{keys['bob']['key_id']}"
    }
    assert "already confirmed" in facetrust(*review, "--reject", key=keys["bob"]["key"], code=2)
    assert "No identification 'nope'" in facetrust(
        "review", "nope", top, key=keys["bob"]["key"], code=2
    )


def test_init_sets_how_long_pending_probes_are_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = CliRunner()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FACETRUST_GALLERY", raising=False)
    run(runner, "init", "--pending-probe-hours", "-1", code=2)
    run(runner, "init", "--pending-probe-hours", "2.5")
    config = json.loads((tmp_path / "facetrust-gallery.json").read_text())
    assert config["pending_probe_hours"] == 2.5


def test_subjects_are_searched_paged_and_viewed_through_the_installed_command(
    tmp_path: Path,
) -> None:
    gallery, _ = Gallery.init_folder(tmp_path)
    with gallery:
        for number in range(5):
            gallery.add_subject(f"desk-{number}", actor="registrar",
                                display_name="Amara Okafor" if number == 3 else None)
        gallery.add_subject("other", actor="registrar")
    facetrust = installed_runner(tmp_path)

    first = facetrust("subject", "list", "--query", "DESK", "--limit", "2")
    page = json.loads(first.stdout)
    assert [s["subject_id"] for s in page["subjects"]] == ["desk-0", "desk-1"]
    assert page["next_after"] == "desk-1"
    hint = "facetrust subject list --after desk-1 --query DESK --limit 2"
    assert hint in first.stderr
    seen = [s["subject_id"] for s in page["subjects"]]
    while page["next_after"] is not None:
        more = facetrust("subject", "list", "--query", "DESK", "--limit", "2",
                         "--after", page["next_after"])
        page = json.loads(more.stdout)
        seen += [s["subject_id"] for s in page["subjects"]]
    assert seen == [f"desk-{n}" for n in range(5)]
    assert more.stderr == ""  # the last page: no hint
    named = json.loads(facetrust("subject", "list", "--query", "okafor").stdout)
    assert [s["subject_id"] for s in named["subjects"]] == ["desk-3"]
    everyone = json.loads(facetrust("subject", "list").stdout)
    assert len(everyone["subjects"]) == 6 and everyone["next_after"] is None
    assert "1<=x<=500" in facetrust("subject", "list", "--limit", "0", code=2).stderr

    shown = json.loads(facetrust("subject", "show", "desk-3", "--actor", "dpo").stdout)
    assert shown["subject"]["display_name"] == "Amara Okafor"
    assert (shown["photos_kept"], shown["consents"]) == (0, [])
    exported = facetrust("audit", "export", "--subject", "desk-3").stdout
    (view,) = [e for e in map(json.loads, exported.splitlines()) if e["kind"] == "subject.view"]
    assert (view["seq"], view["actor"]) == (shown["audit_seq"], "dpo")
    assert "No subject 'nobody'" in facetrust("subject", "show", "nobody", code=2).stderr
    assert json.loads(facetrust("consent", "show", "desk-3", "--actor", "dpo").stdout) == []
    exported = facetrust("audit", "export", "--subject", "desk-3").stdout
    views = [e for e in map(json.loads, exported.splitlines()) if e["kind"] == "subject.view"]
    assert [v["actor"] for v in views] == ["dpo", "dpo"]  # the consent history read too
    assert "No subject 'nobody'" in facetrust("consent", "show", "nobody", code=2).stderr


@pytest.mark.slow  # runs the installed command in subprocesses
def test_refused_searches_and_enrolments_from_the_shell_are_audited(
    tmp_path: Path,
    identities: dict[str, list[Path]],
    embeddings: dict[Path, Embedding],
    enrol_all: Callable[..., None],
) -> None:
    """Every refused use of a photo leaves an audit event, from the shell as from the service."""
    gallery, _ = Gallery.init_folder(tmp_path)
    with gallery:
        enrol_all(gallery, identities, embeddings)
        gallery.add_subject("newcomer", actor="registrar")  # no consent
        head = gallery.audit.head().seq
    env, command = shell_env(tmp_path), INSTALLED
    photo = str(identities[sorted(identities)[0]][2])
    wall = str(SAMPLE_DATA / "non_faces" / sorted(os.listdir(SAMPLE_DATA / "non_faces"))[0])
    two = str(next((SAMPLE_DATA / "multi_face").glob("*.jpg")))
    attempts = [
        (["identify", photo, "--purpose", "marketing", "--case-ref", "C-1"], "identify.refused",
         "InvalidParameter"),
        (["identify", photo, "--purpose", "boarding"], "identify.refused", "InvalidParameter"),
        (["identify", wall, "--purpose", "boarding", "--case-ref", "C-1"], "identify.refused",
         "NoFaceFound"),
        (["identify", two, "--purpose", "boarding", "--case-ref", "C-1", "--face", "single"],
         "identify.refused", "MultipleFaces"),
        (["enroll", "newcomer", photo], "enrol.refused", "ConsentRequired"),
    ]
    for args, _, _ in attempts:
        done = subprocess.run([command, *args], capture_output=True, text=True, env=env,
                              check=False)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr
    with Gallery.find(tmp_path) as reopened:
        refused = [e for e in reopened.audit.events() if e.seq > head]
        assert reopened.audit.verify().ok
    assert [(e.kind, e.fields["error"]) for e in refused] == [(k, e) for _, k, e in attempts]
    assert refused[0].purpose == "marketing" and refused[-1].subject_ids == ("newcomer",)
    assert "must name the case" in refused[1].fields["message"]
