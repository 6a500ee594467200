"""The audit matrix of the installed command: every command that touches biometric data
or consent, for its success and each way it is refused, leaves exactly one audit event
of the expected kind, actor, purpose and subjects, and `facetrust audit verify` passes.

The refusals include those of the command itself before the gallery is asked (an API
key that is missing, unknown or of the wrong role), so a refused attempt through the
shell is as visible to an auditor as one through the REST service.
"""

from __future__ import annotations

import getpass
import json
import subprocess
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from facetrust.gallery import Gallery
from facetrust.gate.events import close_event, enroll_for_event, open_event
from installed_command import installed_runner

LFW = Path(__file__).parent.parent / "data" / "lfw"
HU = [str(LFW / "Hu_Jintao" / f"Hu_Jintao_{n:04d}.jpg") for n in (1, 2, 3)]
FOX = [str(LFW / "Vicente_Fox" / f"Vicente_Fox_{n:04d}.jpg") for n in (1, 3)]
CAT = str(Path(__file__).parent.parent / "data" / "non_faces" / "chelsea_cat.jpg")
EVIDENCE = ("--evidence-ref", "FORM-9", "--evidence-sha256", "ab" * 32, "--notice-version", "v1")
#: Seconds the 'brief' subject's consent lasts: long enough to enrol it, short enough to wait.
BRIEF_S = 20

Facetrust = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def desk(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A gallery with 'hu' (access-control, enrolled), 'kofi' (boarding only), 'library'
    (photo-library only), 'nocon' (no consent) and 'brief' (boarding, enrolled, consent
    ending within BRIEF_S seconds); the events 'flight' (open, boarding) and 'landed'
    (closed); 'traveller', enrolled for 'flight' only; an enroller and two operator keys;
    one identification of Hu by the first operator."""
    folder = tmp_path_factory.mktemp("audit-matrix")
    gallery, _ = Gallery.init_folder(folder)
    with gallery:
        for subject_id, purpose, seconds in [("hu", "access-control", 30 * 86400),
                                             ("kofi", "boarding", 30 * 86400),
                                             ("brief", "boarding", BRIEF_S),
                                             ("library", "photo-library", 30 * 86400)]:
            gallery.add_subject(subject_id, actor="registrar")
            gallery.grant_consent(
                subject_id, [purpose], expires_at=gallery.now() + timedelta(seconds=seconds),
                evidence_ref="FORM-1", evidence_sha256="ab" * 32, notice_version="v1",
                actor="registrar",
            )
        gallery.add_subject("nocon", actor="registrar")
        gallery.enroll("hu", [HU[0]], actor="registrar")
        gallery.enroll("brief", [HU[0]], actor="registrar", check_duplicates=False)
        expires = time.monotonic() + BRIEF_S
        for event_id in ("flight", "landed"):
            open_event(gallery, event_id, purpose="boarding", valid_from=gallery.now(),
                       valid_to=gallery.now() + timedelta(hours=6), actor="agent")
        close_event(gallery, "landed", actor="agent")
        traveller = enroll_for_event(gallery, "flight", FOX[0], evidence_ref="FORM-2",
                                     evidence_sha256="ab" * 32, notice_version="v1",
                                     actor="agent")
    facetrust = installed_runner(folder, FACETRUST_ACTOR="desk")
    keys = {}
    for name, role in [("enroller", "enroller"), ("searcher", "operator"),
                       ("reviewer", "operator")]:
        made = json.loads(facetrust("keys", "create", "--role", role, "--name", name,
                                    "--json").stdout)
        keys[name] = made["key"]
        keys[f"{name}-actor"] = f"key:{made['key_id']}"
    found = json.loads(facetrust("identify", HU[1], "--purpose", "access-control",
                                 "--case-ref", "C-1", "--key", keys["searcher"]).stdout)
    return {"folder": folder, "keys": keys, "identification": found["identification_id"],
            "brief_expires": expires, "traveller": traveller}


def run_one(desk: dict[str, Any], args: list[str], code: int) -> list[dict[str, Any]]:
    """Run the installed command; the audit events it added, after checking the chain."""
    folder = desk["folder"]
    facetrust = installed_runner(folder, FACETRUST_ACTOR="desk")
    with Gallery.find(folder) as gallery:
        head = gallery.audit.head().seq
    facetrust(*args, code=code)
    with Gallery.find(folder) as gallery:
        added = [e.to_dict() for e in gallery.audit.events(after_seq=head)]
    verified = facetrust("audit", "verify")
    assert verified.stdout.startswith("audit log intact")
    return added


def fill(value: Any, desk: dict[str, Any]) -> Any:
    """``value`` with ``{searcher}``-style placeholders replaced from the fixture."""
    if isinstance(value, str):
        return value.format(identification=desk["identification"], user=getpass.getuser(),
                            traveller=desk["traveller"], **desk["keys"])
    if isinstance(value, list):
        return [fill(v, desk) for v in value]
    return value


#: Events that may come with the one of a kind, as consequences of their own: a decided
#: identification's probe is deleted; an erasure starts with erase.started; a withdrawal
#: that leaves no consent erases.
CONSEQUENCES = {"review": {"pending-probe.deleted"}, "erase": {"erase.started"},
                "consent.withdraw": {"erase.started", "erase"}}

#: (test id, arguments, exit status, kind, actor, purpose, subject ids, error type).
MATRIX = [
    ("subject-show", ["subject", "show", "hu"], 0,
     "subject.view", "desk", None, ["hu"], None),
    ("subject-show-unknown", ["subject", "show", "nobody"], 2,
     "subject.view.refused", "desk", None, ["nobody"], "UnknownSubject"),
    ("consent-show-unknown", ["consent", "show", "nobody"], 2,
     "subject.view.refused", "desk", None, ["nobody"], "UnknownSubject"),
    ("consent-grant", ["consent", "grant", "hu", "--purpose", "boarding", "--days", "30",
                       *EVIDENCE], 0,
     "consent.grant", "desk", None, ["hu"], None),
    ("consent-grant-unknown-subject", ["consent", "grant", "nobody", "--purpose", "boarding",
                                       "--days", "30", *EVIDENCE], 2,
     "consent.grant.refused", "desk", None, ["nobody"], "UnknownSubject"),
    ("consent-grant-unknown-purpose", ["consent", "grant", "hu", "--purpose", "nonsense",
                                       "--days", "30", *EVIDENCE], 2,
     "consent.grant.refused", "desk", None, ["hu"], "InvalidParameter"),
    ("consent-grant-in-the-past", ["consent", "grant", "hu", "--purpose", "boarding",
                                   "--expires", "2020-01-01", *EVIDENCE], 2,
     "consent.grant.refused", "desk", None, ["hu"], "InvalidParameter"),
    ("consent-withdraw-unknown-subject", ["consent", "withdraw", "nobody"], 2,
     "consent.withdraw.refused", "desk", None, ["nobody"], "UnknownSubject"),
    ("consent-withdraw-unknown-consent", ["consent", "withdraw", "hu", "--consent-id", "no"], 2,
     "consent.withdraw.refused", "desk", None, ["hu"], "InvalidParameter"),
    ("forget-unknown", ["forget", "nobody"], 2,
     "erase.refused", "desk", None, ["nobody"], "UnknownSubject"),
    ("enroll", ["enroll", "hu", HU[2]], 0,
     "enrol", "desk", None, ["hu"], None),
    ("enroll-unknown", ["enroll", "nobody", HU[2]], 2,
     "enrol.refused", "desk", None, ["nobody"], "UnknownSubject"),
    ("enroll-not-consented", ["enroll", "nocon", HU[2]], 2,
     "enrol.refused", "desk", None, ["nocon"], "ConsentRequired"),
    ("enroll-no-face", ["enroll", "hu", CAT], 2,
     "enrol.refused", "desk", None, ["hu"], "NoFaceFound"),
    ("identify-no-purpose", ["identify", HU[1], "--case-ref", "C-2"], 2,
     "identify.refused", "desk", None, [], "PurposeRequired"),
    ("identify-no-case", ["identify", HU[1], "--purpose", "access-control"], 2,
     "identify.refused", "desk", "access-control", [], "InvalidParameter"),
    ("identify-bad-key", ["identify", HU[1], "--purpose", "access-control", "--case-ref", "C-3",
                          "--key", "ft_0123456789abcdef_notasecretatall"], 2,
     "identify.refused", "cli:{user}", "access-control", [], "AuthorizationError"),
    ("identify-wrong-role", ["identify", HU[1], "--purpose", "access-control",
                             "--case-ref", "C-4", "--key", "{enroller}"], 2,
     "identify.refused", "{enroller-actor}", "access-control", [], "AuthorizationError"),
    ("verify-subject", ["verify", HU[1], "--subject", "hu", "--purpose", "access-control",
                        "--case-ref", "C-5"], 0,
     "verify", "desk", "access-control", ["hu"], None),
    ("verify-subject-unknown", ["verify", HU[1], "--subject", "nobody",
                                "--purpose", "access-control", "--case-ref", "C-6"], 2,
     "verify.refused", "desk", "access-control", ["nobody"], "UnknownSubject"),
    ("verify-subject-not-consented", ["verify", HU[1], "--subject", "kofi",
                                      "--purpose", "access-control", "--case-ref", "C-7"], 2,
     "verify.refused", "desk", "access-control", ["kofi"], "PurposeNotConsented"),
    ("verify-subject-expired", ["verify", HU[1], "--subject", "brief",
                                "--purpose", "boarding", "--case-ref", "C-8"], 2,
     "verify.refused", "desk", "boarding", ["brief"], "ConsentExpired"),
    ("verify-subject-event-only", ["verify", FOX[1], "--subject", "{traveller}",
                                   "--purpose", "boarding", "--case-ref", "C-9"], 2,
     "verify.refused", "desk", "boarding", ["{traveller}"], "EventOnlySubject"),
    ("review-no-key", ["review", "{identification}", "hu"], 2,
     "review.refused", "cli:{user}", None, ["hu"], "AuthorizationError"),
    ("review-wrong-role", ["review", "{identification}", "hu", "--key", "{enroller}"], 2,
     "review.refused", "{enroller-actor}", None, ["hu"], "AuthorizationError"),
    ("review-own-search", ["review", "{identification}", "hu", "--key", "{searcher}"], 2,
     "review.refused", "{searcher-actor}", None, ["hu"], "ReviewNotAllowed"),
    ("review-not-a-candidate", ["review", "{identification}", "kofi", "--key", "{reviewer}"], 2,
     "review.refused", "{reviewer-actor}", None, ["kofi"], "InvalidParameter"),
    ("review-unknown-identification", ["review", "nope", "hu", "--key", "{reviewer}"], 2,
     "review.refused", "{reviewer-actor}", None, ["hu"], "UnknownIdentification"),
    ("event-add", ["event", "add", "flight", "kofi"], 0,
     "event.add", "desk", "boarding", ["kofi"], None),
    ("event-add-not-consented", ["event", "add", "flight", "nocon"], 2,
     "event.add.refused", "desk", None, ["nocon"], "ConsentRequired"),
    ("event-add-other-purpose", ["event", "add", "flight", "library"], 2,
     "event.add.refused", "desk", None, ["library"], "PurposeNotConsented"),
    ("event-add-closed", ["event", "add", "landed", "kofi"], 2,
     "event.add.refused", "desk", None, ["kofi"], "EventError"),
    ("event-enroll-no-face", ["event", "enroll", "flight", CAT, "--evidence-ref", "F-1",
                              "--evidence-file", CAT, "--notice-version", "v1"], 2,
     "event.enroll.refused", "desk", "boarding", [], "NoFaceFound"),
    ("gate-run-closed", ["gate", "run", "--event", "landed", "--source", str(LFW / "Hu_Jintao")],
     2, "gate.run.refused", "desk", None, [], "EventError"),
    ("gate-run-unknown", ["gate", "run", "--event", "nope", "--source", str(LFW / "Hu_Jintao")],
     2, "gate.run.refused", "desk", None, [], "EventError"),
    ("index-save", ["index", "save"], 0, "index.save", "desk", None, [], None),
    ("review", ["review", "{identification}", "hu", "--reject", "--key", "{reviewer}"], 0,
     "review", "{reviewer-actor}", "access-control", ["hu"], None),
    ("consent-withdraw", ["consent", "withdraw", "library"], 0,
     "consent.withdraw", "desk", None, ["library"], None),
    ("forget", ["forget", "nocon"], 0, "erase", "desk", None, ["nocon"], None),
]


@pytest.mark.slow  # runs the installed command in subprocesses
@pytest.mark.parametrize(
    "args,code,kind,actor,purpose,subjects,error", [row[1:] for row in MATRIX],
    ids=[row[0] for row in MATRIX],
)
def test_each_command_and_refusal_leaves_one_audit_event(
    desk: dict[str, Any], args: list[str], code: int, kind: str, actor: str,
    purpose: str | None, subjects: list[str], error: str | None,
) -> None:
    if "brief" in args:  # wait for its consent to end
        time.sleep(max(0.0, desk["brief_expires"] - time.monotonic() + 0.5))
    added = run_one(desk, fill(args, desk), code)
    follow = CONSEQUENCES.get(kind, set())
    assert [e["kind"] for e in added if e["kind"] not in follow] == [kind], added
    (event,) = [e for e in added if e["kind"] == kind]
    assert event["actor"] == fill(actor, desk)
    assert event["purpose"] == purpose
    assert event["subject_ids"] == fill(subjects, desk)
    assert event.get("error") == error, event


def test_a_huge_id_is_audited_bounded_not_verbatim(tmp_path: Path) -> None:
    """A refused request naming a 100,000-character subject id leaves one refusal event
    that names the id bounded (its start and its length), not 100 kB copied twice into
    the hash-chained log every time someone tries."""
    folder = tmp_path / "g"
    Gallery.init_folder(folder)[0].close()
    facetrust = installed_runner(folder, FACETRUST_ACTOR="desk")
    huge = "a" * 100_000
    facetrust("subject", "show", huge, code=2)
    with Gallery.find(folder) as gallery:
        (event,) = gallery.audit.events(kind="subject.view.refused")
        assert gallery.audit.verify().ok
    (named,) = event.subject_ids
    assert named.startswith("a" * 64) and "100,000 characters" in named and len(named) < 200
    assert len(event.fields["message"]) < 1_000
