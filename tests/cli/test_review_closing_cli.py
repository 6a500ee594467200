"""A case nobody can decide any more, from the shell: the installed ``facetrust``
refuses a review of a candidate no longer eligible, and of a case closed because
none is, with the reason in plain English (exit 2, no traceback)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from facetrust.faces import Embedding
from facetrust.gallery import Gallery
from installed_command import installed_runner

pytestmark = pytest.mark.slow  # runs the installed command in subprocesses

KOFI = "Kofi_Annan"
TWIN = "kofi-lookalike"


def test_reviews_of_ineligible_candidates_and_closed_cases_are_refused_in_plain_english(
    tmp_path: Path, identities: dict[str, list[Path]], embeddings: dict[Path, Embedding],
) -> None:
    gallery, _ = Gallery.init_folder(tmp_path)
    boarding = {}
    with gallery:
        for subject_id, faces in ((KOFI, identities[KOFI][:2]),
                                  (TWIN, [embeddings[identities[KOFI][1]]])):
            gallery.add_subject(subject_id, actor="registrar")
            for purpose in ("boarding", "access-control"):  # ending boarding erases nobody
                granted = gallery.grant_consent(
                    subject_id, [purpose], expires_at=gallery.now() + timedelta(days=365),
                    evidence_ref=f"form-{subject_id}", evidence_sha256="ab" * 32,
                    notice_version="v1", actor="registrar",
                )
                boarding.setdefault(subject_id, granted.consent_id)
            gallery.enroll(subject_id, faces, actor="registrar", check_duplicates=False)
    facetrust = installed_runner(tmp_path)
    keys = {
        name: json.loads(facetrust("keys", "create", "--role", "operator", "--name", name,
                                   "--json").stdout)["key"]
        for name in ("searcher", "alice")
    }
    found = json.loads(facetrust("identify", str(identities[KOFI][2]), "--purpose", "boarding",
                                 "--case-ref", "C-CLI-CLOSE", "-k", "2",
                                 "--key", keys["searcher"]).stdout)
    ident = found["identification_id"]
    assert {c["subject_id"] for c in found["candidates"]} == {KOFI, TWIN}

    facetrust("consent", "withdraw", KOFI, "--consent-id", boarding[KOFI])
    refused = facetrust("review", ident, KOFI, "--key", keys["alice"], code=2).stderr
    assert f"Candidate '{KOFI}'" in refused
    assert "is no longer eligible (consent to boarding withdrawn)" in refused

    withdrawn = json.loads(facetrust("consent", "withdraw", TWIN, "--consent-id",
                                     boarding[TWIN]).stdout)
    assert withdrawn["erasure"] is None
    for subject_id in (KOFI, TWIN):
        refused = facetrust("review", ident, subject_id, "--reject", "--key", keys["alice"],
                            code=2).stderr
        assert "was closed because none of its candidates is eligible any more" in refused
    swept = json.loads(facetrust("retention", "sweep").stdout)
    assert swept["identifications_closed"] == 0  # closed by the withdrawal already
    with Gallery.find(tmp_path) as gallery:
        (closed,) = gallery.audit.events(kind="identification.closed")
        assert closed.fields["identification_id"] == ident
        assert closed.fields["ineligible"] == {KOFI: "consent to boarding withdrawn",
                                               TWIN: "consent to boarding withdrawn"}
        assert gallery.store.get_pending_probe(ident) is None
