"""One pipeline for every entry point: one real photo pair, the same templates and the
same decision through the library, the installed command, a real server on loopback,
the gate, batch enrolment (its worker processes included) and the evaluation.

The reference is the library's: ``facetrust.default_pipeline()`` makes the two
templates, ``facetrust.verify`` the decision. Every other entry point must give
the same templates and the same decision at the same operating point.

How "the same" is checked, and the tolerances:

- a template an entry point hands back (``facetrust embed``, the evaluation's
  cache) must equal the library's bit for bit: same code, same float32 network;
- a template a gallery stores is read back with :meth:`Gallery.search`, probing
  with the library's template: the gallery keeps it turned by a keyed orthogonal
  matrix, in float32, so the distance to the very same template comes back as
  0 within float32 rounding (:data:`STORED`, 1e-6; measured: 0.0 and 3e-9);
- a distance (and threshold) in a REST response is rounded to 4 digits by
  design, so it must equal the library's rounded to 4 digits.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

import facetrust
from facetrust import FacePipeline, Settings
from facetrust.evaluation.cache import EmbeddingCache
from facetrust.gallery import Gallery
from facetrust.gate import events
from facetrust.gate.session import run_gate
from facetrust.service import Role
from gallery_fixtures import EVIDENCE_SHA256, consent
from installed_command import installed_runner
from service.conftest import (
    LiveServer,
    add_consented_subject,
    enrol,
    start_server,
    stop_server,
)

pytestmark = pytest.mark.slow  # the installed command, a server, worker processes

SAMPLE = Path(__file__).parent / "data" / "lfw"
#: The pair: two photos of one person, a match at the default operating point.
PHOTO_A = SAMPLE / "Colin_Powell" / "Colin_Powell_0001.jpg"
PHOTO_B = SAMPLE / "Colin_Powell" / "Colin_Powell_0002.jpg"
#: Someone else, so that the evaluation has non-mated pairs.
STRANGER = SAMPLE / "Kofi_Annan" / "Kofi_Annan_0001.jpg"

#: Two photos of one person 0.513 apart: a match at the table's default point (fmr-1e-3,
#: threshold 0.543), no match at fmr-1e-4 (0.474), so the point an entry point decides at
#: shows in its decision.
CLOSE_CALL = (SAMPLE / "Jennifer_Lopez" / "Jennifer_Lopez_0001.jpg",
              SAMPLE / "Jennifer_Lopez" / "Jennifer_Lopez_0002.jpg")

#: Distance between a stored (turned, float32) template and the template it was made from.
STORED = 1e-6
PURPOSE = "boarding"


class Reference:
    """The library's templates of the pair and its decision."""

    def __init__(self) -> None:
        pipeline = facetrust.default_pipeline()
        self.a = pipeline.embed_one(PHOTO_A).embedding
        self.b = pipeline.embed_one(PHOTO_B).embedding
        self.verdict = facetrust.verify(PHOTO_A, PHOTO_B)
        assert self.verdict.match  # the pair is a match: a decision worth comparing

    def assert_same_decision(self, record: dict[str, object], *, digits: int | None = None) -> None:
        """``record`` (a verdict or decision as JSON) decides as the library does."""
        distance, threshold = self.verdict.distance, self.verdict.threshold
        if digits is not None:  # the REST service rounds both (by design)
            distance, threshold = round(distance, digits), round(threshold, digits)
        assert record["distance"] == pytest.approx(distance, abs=STORED), record
        assert record["threshold"] == threshold, record
        assert record["operating_point"] == self.verdict.operating_point, record


@pytest.fixture(scope="module")
def reference() -> Reference:
    return Reference()


def assert_stores_the_pair(
    gallery: Gallery, reference: Reference, subjects: dict[str, str]
) -> None:
    """``gallery`` holds the library's template of each photo (photo name -> subject)."""
    for name, template in (("a", reference.a), ("b", reference.b)):
        if name not in subjects:
            continue
        hits = gallery.search(template, purpose=PURPOSE, k=5).hits
        nearest = {h.subject_id: h.distance for h in hits}
        assert nearest[subjects[name]] <= STORED, (name, nearest)


def test_the_gallery_enrols_and_verifies_with_the_librarys_templates(
    tmp_path: Path, reference: Reference
) -> None:
    gallery, _ = Gallery.init_folder(tmp_path / "g")
    with gallery:
        gallery.add_subject("colin", actor="registrar")
        consent(gallery, "colin", (PURPOSE,))
        gallery.enroll("colin", [PHOTO_A], actor="registrar")
        assert_stores_the_pair(gallery, reference, {"a": "colin"})
        result = gallery.verify_subject(PHOTO_B, "colin", purpose=PURPOSE, actor="agent",
                                        case_ref="case-1")
        reference.assert_same_decision(result.to_dict())
        assert result.match


def test_the_installed_command_gives_the_librarys_templates_and_decision(
    tmp_path: Path, reference: Reference
) -> None:
    folder = tmp_path / "g"
    facetrust_command = installed_runner(folder, FACETRUST_ACTOR="registrar")
    embedded = [json.loads(line) for line in
                facetrust_command("embed", str(PHOTO_A), str(PHOTO_B)).stdout.splitlines()]
    for line, template in zip(embedded, (reference.a, reference.b), strict=True):
        (face,) = line["faces"]
        assert face["embedding"]["model_id"] == template.model_id
        assert np.array_equal(np.asarray(face["embedding"]["vector"], np.float32), template.vector)

    facetrust_command("init", str(folder))
    # two photos: at the gallery's point (FACETRUST_GALLERY), here the table's default
    verdict = json.loads(facetrust_command("verify", str(PHOTO_A), str(PHOTO_B), "--json").stdout)
    reference.assert_same_decision(verdict)
    assert verdict["match"] and verdict["model_id"] == reference.a.model_id
    facetrust_command("subject", "add", "colin")
    form = tmp_path / "form.txt"
    form.write_text("signed")
    facetrust_command("consent", "grant", "colin", "--purpose", PURPOSE, "--days", "30",
                      "--evidence-ref", "form-1", "--evidence-file", str(form),
                      "--notice-version", "n1")
    facetrust_command("enroll", "colin", str(PHOTO_A))
    checked = json.loads(facetrust_command(
        "verify", str(PHOTO_B), "--subject", "colin", "--purpose", PURPOSE,
        "--case-ref", "case-1",
    ).stdout)
    reference.assert_same_decision(checked)
    with Gallery.find(folder) as gallery:
        assert_stores_the_pair(gallery, reference, {"a": "colin"})


def test_batch_enrolment_workers_store_the_librarys_templates(
    tmp_path: Path, reference: Reference
) -> None:
    folder = tmp_path / "g"
    photos = tmp_path / "photos"
    photos.mkdir()
    for photo in (PHOTO_A, PHOTO_B):
        shutil.copy(photo, photos / photo.name)
    consents = tmp_path / "consents.csv"
    consents.write_text(
        "photo,subject_id,display_name,purposes,expires,evidence_ref,evidence_sha256,"
        "notice_version\n"
        + "".join(f"{p.name},colin-{n},,{PURPOSE},2099-01-01,form-{n},{EVIDENCE_SHA256},n1\n"
                  for n, p in (("a", PHOTO_A), ("b", PHOTO_B)))
    )
    facetrust_command = installed_runner(folder, FACETRUST_ACTOR="registrar")
    facetrust_command("init", str(folder))
    # two worker processes: each photo is embedded in one of them
    done = facetrust_command("enroll-batch", "run", str(photos), "--consents", str(consents),
                             "--workers", "2", "--no-progress")
    assert "enrolled" in done.stdout + done.stderr
    with Gallery.find(folder) as gallery:
        assert_stores_the_pair(gallery, reference, {"a": "colin-a", "b": "colin-b"})


def test_the_gate_decides_a_still_photo_as_the_library_does(
    tmp_path: Path, reference: Reference
) -> None:
    folder = tmp_path / "g"
    gallery, _ = Gallery.init_folder(folder)
    with gallery:
        gallery.add_subject("colin", actor="registrar")
        consent(gallery, "colin", (PURPOSE,))
        gallery.enroll("colin", [PHOTO_A], actor="registrar")
        now = gallery.now()
        events.open_event(gallery, "flight-1", purpose=PURPOSE, actor="agent",
                          valid_from=now - timedelta(minutes=1), valid_to=now + timedelta(hours=1))
        events.add_member(gallery, "flight-1", "colin", actor="agent")
    frames = tmp_path / "frames"  # the gate's frame source: a folder of still photos
    frames.mkdir()
    shutil.copy(PHOTO_B, frames / "0001.jpg")
    facetrust_command = installed_runner(folder, FACETRUST_ACTOR="agent")
    done = facetrust_command("gate", "run", "--event", "flight-1", "--source", str(frames))
    (decision,) = [json.loads(line) for line in done.stdout.splitlines()]
    assert (decision["outcome"], decision["subject_id"]) == ("match", "colin")
    reference.assert_same_decision(decision)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    started = start_server(tmp_path_factory.mktemp("one-pipeline-service"),
                           {"enroller": Role.ENROLLER, "operator": Role.OPERATOR})
    yield started
    stop_server(started)


def test_the_rest_service_enrols_and_decides_as_the_library_does(
    server: LiveServer, reference: Reference
) -> None:
    with server.client("enroller") as enroller:
        add_consented_subject(enroller, "colin", (PURPOSE,))
        assert enrol(enroller, "colin", PHOTO_A).status_code == 201
    form = {"purpose": PURPOSE, "case_ref": "case-1"}
    with server.client("operator") as operator, PHOTO_A.open("rb") as a, PHOTO_B.open("rb") as b:
        photos = operator.post("/v1/verify", data=form, files={
            "image_a": (PHOTO_A.name, a, "image/jpeg"), "image_b": (PHOTO_B.name, b, "image/jpeg"),
        })
        assert photos.status_code == 200, photos.text
        reference.assert_same_decision(photos.json(), digits=4)
        b.seek(0)
        subject = operator.post("/v1/subjects/colin/verify", data=form,
                                files={"image": (PHOTO_B.name, b, "image/jpeg")})
        assert subject.status_code == 200, subject.text
        reference.assert_same_decision(subject.json(), digits=4)
    with Gallery.find(server.folder) as gallery:
        assert_stores_the_pair(gallery, reference, {"a": "colin"})


@pytest.mark.parametrize("gallery_point", [None, "fmr-1e-4"])
def test_two_photos_are_decided_at_the_gallerys_point_by_the_command_and_the_service(
    tmp_path: Path, gallery_point: str | None
) -> None:
    """``facetrust verify A B`` decides at the operating point of the gallery it finds
    (--gallery, FACETRUST_GALLERY or the current folder), as ``POST /v1/verify`` of a
    server on that gallery does, and says which point that was; without a gallery, at
    the table's default, as :func:`facetrust.verify`."""
    folder = tmp_path / "g"
    server = start_server(folder, {"operator": Role.OPERATOR}, operating_point=gallery_point)
    try:
        with server.client("operator") as operator, CLOSE_CALL[0].open("rb") as a, \
                CLOSE_CALL[1].open("rb") as b:
            answer = operator.post("/v1/verify", data={"purpose": "access-control",
                                                       "case_ref": "case-1"}, files={
                "image_a": ("a.jpg", a, "image/jpeg"), "image_b": ("b.jpg", b, "image/jpeg"),
            })
    finally:
        stop_server(server)
    assert answer.status_code == 200, answer.text
    rest = answer.json()
    library = facetrust.verify(*CLOSE_CALL, operating_point=gallery_point)
    assert library.match is (gallery_point is None)  # the point decides this pair
    assert (rest["match"], rest["operating_point"], rest["threshold"]) == (
        library.match, library.operating_point, round(library.threshold, 4))

    photos = [str(p) for p in CLOSE_CALL]
    code = 0 if library.match else 1
    elsewhere = tmp_path / "elsewhere"  # a folder without a gallery
    elsewhere.mkdir()
    for name, command in [
        ("FACETRUST_GALLERY", installed_runner(folder, cwd=elsewhere)),
        ("--gallery", installed_runner(cwd=elsewhere)),
        ("the current folder", installed_runner(cwd=folder)),
    ]:
        extra = ("--gallery", str(folder)) if name == "--gallery" else ()
        verdict = json.loads(command("verify", *photos, "--json", *extra, code=code).stdout)
        source = "gallery" if gallery_point else "default"
        assert verdict == {"image_a": photos[0], "image_b": photos[1], **library.to_dict(),
                           "operating_point_source": source}, name
        said = command("verify", *photos, *extra, code=code).stdout
        assert (f"operating point {library.operating_point}, the gallery's" in said
                if gallery_point else
                f"operating point {library.operating_point}, the table's default" in said), said
    # no gallery anywhere: the table's default, whatever a gallery would have said
    verdict = json.loads(installed_runner(cwd=elsewhere)("verify", *photos, "--json").stdout)
    assert (verdict["match"], verdict["operating_point"]) == (True, "fmr-1e-3")
    assert verdict["operating_point_source"] == "default"
    # a point given on the command line wins over the gallery's, and says so
    given = json.loads(installed_runner(folder)(
        "verify", *photos, "--json", "-p", "fmr-1e-2", code=0).stdout)
    assert (given["operating_point"], given["operating_point_source"]) == ("fmr-1e-2", "option")


@pytest.mark.parametrize("gallery_point", [None, "fmr-1e-4"])
def test_the_evaluation_measures_the_librarys_templates_at_the_gallerys_threshold(
    tmp_path: Path, reference: Reference, gallery_point: str | None
) -> None:
    """``facetrust evaluate demographics`` in a shell whose gallery (FACETRUST_GALLERY)
    decides at ``gallery_point`` (None: the table's default, as ``verify``) measures
    FMR/FNMR at that gallery's threshold, with the library's templates."""
    images = tmp_path / "images"
    for photo in (PHOTO_A, PHOTO_B, STRANGER):
        (images / photo.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(photo, images / photo.parent.name / photo.name)
    labels = tmp_path / "labels.csv"
    labels.write_text("Colin_Powell,gender,male\nKofi_Annan,gender,male\n")
    cache = tmp_path / "embeddings.sqlite"
    folder = tmp_path / "g"
    gallery, _ = Gallery.init_folder(folder, operating_point=gallery_point)
    with gallery:
        point = gallery.parts.operating_point(reference.a.model_id)
    if gallery_point is None:  # the gallery's default is verify's
        assert (point.name, point.threshold) == (reference.verdict.operating_point,
                                                 reference.verdict.threshold)
    done = installed_runner(folder)(
        "evaluate", "demographics", "--images", str(images), "--labels", str(labels),
        "--cache", str(cache), "--workers", "2", "--min-pairs", "1", "--no-progress",
    )
    audit = json.loads(done.stdout)["demographics"]
    assert (audit["operating_point"], audit["threshold"]) == (point.name, point.threshold)
    (group,) = audit["groups"]
    assert (group["n_mated"], group["fnmr"]) == (1, 0.0)  # the pair: matched, as by verify
    # the evaluation's own embedding, in its worker processes, made the library's templates
    with EmbeddingCache(cache) as stored:
        for photo, template in ((PHOTO_A, reference.a), (PHOTO_B, reference.b)):
            cached = stored.get(images / photo.parent.name / photo.name)
            assert cached is not None and cached.acquired
            assert np.array_equal(cached.faces[0].vector, template.vector)


def test_the_gate_reads_faces_with_the_gallerys_own_pipeline(
    tmp_path: Path
) -> None:
    """A gallery opened with its own pipeline (here: mirror test-time augmentation, its
    own model id) is searched by the gate with that pipeline's templates, not with one
    built from the environment that the gallery never enrolled with."""
    gallery, config_path = Gallery.init_folder(tmp_path / "g")
    gallery.close()
    mirrored = FacePipeline(Settings(augmentation="mirror"))
    with Gallery.find(config_path, pipeline=mirrored) as gallery:
        gallery.add_subject("colin", actor="registrar")
        consent(gallery, "colin", (PURPOSE,))
        gallery.enroll("colin", [PHOTO_A], actor="registrar")
        verdict = gallery.verify_subject(PHOTO_B, "colin", purpose=PURPOSE, actor="agent",
                                         case_ref="case-1")
        assert verdict.match and verdict.model_id == "dlib-resnet-v1+mirror"
        now = gallery.now()
        events.open_event(gallery, "flight-1", purpose=PURPOSE, actor="agent",
                          valid_from=now - timedelta(minutes=1), valid_to=now + timedelta(hours=1))
        events.add_member(gallery, "flight-1", "colin", actor="agent")
        frames = tmp_path / "frames"
        frames.mkdir()
        shutil.copy(PHOTO_B, frames / "0001.jpg")
        (decision,) = run_gate(gallery, "flight-1", frames, gate_id="B12", actor="agent")
    assert (decision.outcome, decision.subject_id) == ("match", "colin")
    assert decision.distance == pytest.approx(verdict.distance, abs=STORED)
    assert (decision.threshold, decision.operating_point) == (verdict.threshold,
                                                              verdict.operating_point)
