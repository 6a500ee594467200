"""A review decision keeps the quorum it was taken under: changing ``review_quorum``
in the gallery config applies to new searches only. An identification confirmed
under a quorum of 1 stays confirmed once the quorum is raised to 2, and one searched
under 2 still needs two confirmations once it is lowered to 1: from the installed
``facetrust`` command, the library, the REST service and the console alike."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from facetrust.gallery import Gallery
from installed_command import installed_runner

from .conftest import launch_server, stop_server
from .test_console_edges import logged_in

pytestmark = [pytest.mark.service, pytest.mark.slow]  # the installed command and a server

KOFI = "Kofi_Annan"


def set_quorum(config_path: Path, quorum: int) -> None:
    """Edit the gallery config file as an administrator would."""
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["review_quorum"] = quorum
    config_path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def test_a_quorum_change_never_reinterprets_a_search_made_before_it(
    tmp_path: Path, identities: dict[str, list[Path]],
) -> None:
    gallery, config_path = Gallery.init_folder(tmp_path, review_quorum=1)
    with gallery:
        gallery.add_subject(KOFI, actor="registrar")
        gallery.grant_consent(
            KOFI, ["boarding"], expires_at=gallery.now() + timedelta(days=365),
            evidence_ref="form-kofi", evidence_sha256="ab" * 32, notice_version="v1",
            actor="registrar",
        )
        gallery.enroll(KOFI, identities[KOFI][:2], actor="registrar")
    facetrust = installed_runner(tmp_path)
    created = {
        name: json.loads(facetrust("keys", "create", "--role", "operator", "--name", name,
                                   "--json").stdout)
        for name in ("searcher", "alice", "bob")
    }
    keys = {name: c["key"] for name, c in created.items()}

    def identify(case_ref: str) -> str:
        found = json.loads(facetrust("identify", str(identities[KOFI][2]), "--purpose",
                                     "boarding", "--case-ref", case_ref,
                                     "--key", keys["searcher"]).stdout)
        assert [c["subject_id"] for c in found["candidates"]] == [KOFI]
        return str(found["identification_id"])

    def review(identification_id: str, reviewer: str, code: int = 0) -> str:
        done = facetrust("review", identification_id, KOFI, "--key", keys[reviewer], code=code)
        return done.stdout if code == 0 else done.stderr

    decided = identify("C-QUORUM-1")
    confirmed = json.loads(review(decided, "alice"))
    assert (confirmed["status"], confirmed["required"]) == ("confirmed", 1)

    set_quorum(config_path, 2)  # raised: the decision taken under 1 stands
    refused = review(decided, "bob", code=2)
    assert f"is already confirmed as '{KOFI}'" in refused
    waiting = identify("C-QUORUM-2")  # searched under 2
    first = json.loads(review(waiting, "alice"))
    assert (first["status"], first["required"]) == ("pending", 2)

    set_quorum(config_path, 1)  # lowered: the case searched under 2 still needs a second
    with Gallery.find(tmp_path) as gallery:
        assert gallery.config.review_quorum == 1
        case = gallery.review_case(waiting, reviewer=f"key:{created['bob']['key_id']}")
        assert (case.status, case.review_quorum) == ("pending", 2)
        assert case.candidates[0].summary == "1 of 2 confirmations; waiting for a second reviewer."
        assert case.may_review
        before = gallery.review_case(decided, reviewer=f"key:{created['bob']['key_id']}")
        assert (before.status, before.review_quorum) == ("confirmed", 1)

    set_quorum(config_path, 3)  # the server reads the config as it is now
    server = launch_server(tmp_path, keys, {n: c["key_id"] for n, c in created.items()})
    try:
        with server.client("bob") as bob:
            case = bob.get(f"/v1/identifications/{decided}").json()
            assert case["status"] == "confirmed" and case["review_quorum"] == 1
            assert case["candidates"][0]["required"] == 1
            case = bob.get(f"/v1/identifications/{waiting}").json()
            assert case["status"] == "pending" and case["review_quorum"] == 2
        with logged_in(server, "bob") as browser:
            page = browser.get(f"/console/reviews/{waiting}").text
            assert "Each candidate needs 2 confirmations from different reviewers" in page
            assert "1 of 2 confirmations; waiting for a second reviewer." in page
            page = browser.get(f"/console/reviews/{decided}").text
            assert "Each candidate needs 1 confirmation from different reviewers" in page
            assert 'id="case-status">confirmed<' in page
        with server.client("bob") as bob:  # the second confirmation decides it under 2
            answer = bob.post(f"/v1/identifications/{waiting}/reviews",
                              json={"subject_id": KOFI})
            assert answer.status_code == 200, answer.text
            assert (answer.json()["status"], answer.json()["required"]) == ("confirmed", 2)
    finally:
        stop_server(server)
    with Gallery.find(tmp_path) as gallery:
        (searched,) = [e for e in gallery.audit.events(kind="identify")
                       if e.fields["identification_id"] == waiting]
        assert searched.fields["review_quorum"] == 2
        assert gallery.store.get_identification(waiting).review_quorum == 2  # type: ignore[union-attr]
