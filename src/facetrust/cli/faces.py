"""``facetrust detect``, ``embed`` and ``verify``: the face pipeline from the shell."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from ..api import default_pipeline
from ..api import verify as verify_photos
from ..batch import embed_many
from ..config import Settings
from ..demo import run_gate_demo
from ..errors import FacetrustError
from ..gallery.config import GALLERY_ENV, find_config, operating_point_of
from ..pipeline import DEFAULT_FACE_POLICY, FACE_POLICY_HELP, FacePolicy, parse_face_policy

EXIT_MATCH, EXIT_NO_MATCH = 0, 1


def _settings(detector: str | None, max_side: int | None) -> Settings:
    return Settings.from_env(detector=detector, detection_max_side=max_side)


def _policy(_context: click.Context, _parameter: click.Parameter, value: str) -> FacePolicy:
    try:
        return parse_face_policy(value)
    except FacetrustError as error:
        raise click.BadParameter(str(error)) from None


#: ``--face``: the face policy of every command that reads a face from a photo.
face_option = click.option(
    "--face",
    "face_policy",
    default=str(DEFAULT_FACE_POLICY),
    show_default=True,
    callback=_policy,
    help=FACE_POLICY_HELP,
)


detector_option = click.option(
    "--detector", type=click.Choice(["hog", "cnn"]), default=None, help="Face detector."
)
max_side_option = click.option(
    "--detection-max-side",
    "max_side",
    type=int,
    default=None,
    help="Longer side (px) of the copy detection runs on; raise for small faces.",
)


def _emit(record: dict[str, Any]) -> None:
    click.echo(json.dumps(record))


@click.command()
@click.argument("images", nargs=-1, required=True, type=click.Path())
@detector_option
@max_side_option
def detect(images: tuple[str, ...], detector: str | None, max_side: int | None) -> None:
    """Detect faces: one JSON line per image with boxes, landmarks and quality.

    An image that cannot be read gives a line with an "error" field; the exit
    status is then 2.
    """
    pipeline = default_pipeline(_settings(detector, max_side))
    failed = False
    for image in images:
        try:
            faces = pipeline.detect(image)
        except FacetrustError as error:
            failed = True
            _emit({"image": image, "error": str(error), "error_type": type(error).__name__})
            continue
        _emit({"image": image, "faces": [f.to_dict() for f in faces]})
    if failed:
        sys.exit(2)


@click.command()
@click.argument("images", nargs=-1, required=True, type=click.Path())
@detector_option
@max_side_option
@click.option("--workers", type=click.IntRange(1, 256), default=None,
              help="Worker processes (default: one per core).")
@click.option("--progress/--no-progress", default=False, help="Show a progress bar on stderr.")
def embed(
    images: tuple[str, ...],
    detector: str | None,
    max_side: int | None,
    workers: int | None,
    progress: bool,
) -> None:
    """Embed faces: one JSON line per image with every face's 128-d template."""
    settings = _settings(detector, max_side)
    failed = False
    for result in embed_many(images, settings, workers=workers, progress=progress):
        if result.error is not None:
            failed = True
            _emit(
                {
                    "image": result.source,
                    "error": str(result.error),
                    "error_type": type(result.error).__name__,
                }
            )
            continue
        _emit({"image": result.source, "faces": [f.to_dict() for f in result.faces]})
    if failed:
        sys.exit(2)


@click.command()
@click.argument("image_a", type=click.Path())
@click.argument("image_b", type=click.Path(), required=False)
@click.option(
    "--operating-point", "-p", default=None, help="Threshold name from the calibration table."
)
@face_option
@click.option("--no-quality-check", is_flag=True, help="Accept faces that fail quality minimums.")
@click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON object (--subject always does)."
)
@detector_option
@max_side_option
@click.option("--subject", default=None, help="Compare IMAGE_A with this enrolled subject.")
@click.option("--purpose", default=None, help="With --subject: the consented purpose.")
@click.option(
    "--case-ref", default=None, help="With --subject: the case or ticket the check belongs to."
)
@click.option(
    "--gallery",
    "gallery_path",
    default=None,
    envvar=GALLERY_ENV,
    help="Gallery config file or folder: with --subject, the gallery to verify against; "
    "for two photos, the gallery whose operating point decides (default: the current "
    "folder's gallery, if any).",
)
@click.option("--actor", envvar="FACETRUST_ACTOR", default=None, help="With --subject: who asks.")
def verify(
    image_a: str,
    image_b: str | None,
    operating_point: str | None,
    face_policy: FacePolicy,
    no_quality_check: bool,
    as_json: bool,
    detector: str | None,
    max_side: int | None,
    subject: str | None,
    purpose: str | None,
    case_ref: str | None,
    gallery_path: str | None,
    actor: str | None,
) -> None:
    """Do two photos show the same person? Exit 0 match, 1 no match, 2 error.

    Two photos are decided at the gallery's operating point (--gallery,
    FACETRUST_GALLERY or the current folder's gallery; the table's default
    without one), as the REST service and the console decide, unless
    --operating-point names another; the output says which point decided.

    With --subject ID --purpose P --case-ref C, compare IMAGE_A with an enrolled
    subject of the gallery instead (needs the subject's consent for P; audited;
    prints JSON). Options of the other mode are refused, not ignored.
    """
    policy = face_policy
    _refuse_options_of_the_other_mode(subject is not None)
    if subject is not None:
        if image_b is not None:
            raise click.UsageError("with --subject give one image only")
        _verify_subject(image_a, subject, purpose, case_ref, gallery_path, actor, policy)
        return
    if image_b is None:
        raise click.UsageError("give two images, or one image and --subject")
    source = "option"
    if operating_point is None:
        operating_point = operating_point_of(gallery_path)
        source = "default" if operating_point is None else "gallery"
    verdict = verify_photos(image_a, image_b, operating_point=operating_point,
                            face_policy=policy, check_quality=not no_quality_check,
                            settings=_settings(detector, max_side))
    if as_json:
        _emit({"image_a": image_a, "image_b": image_b, **verdict.to_dict(),
               "operating_point_source": source})
    else:
        word = "MATCH" if verdict.match else "NO MATCH"
        whose = {
            "option": "from --operating-point",
            "gallery": f"the gallery's ({find_config(gallery_path)})",
            "default": "the table's default",
        }[source]
        click.echo(
            f"{word}: distance {verdict.distance:.4f} "
            f"{'<=' if verdict.match else '>'} threshold {verdict.threshold:.4f} "
            f"(operating point {verdict.operating_point}, {whose}; model {verdict.model_id}; "
            "lower distance = more similar)"
        )
    sys.exit(EXIT_MATCH if verdict.match else EXIT_NO_MATCH)


#: Options of ``verify`` that only one mode uses, and why the other does not.
_PHOTOS_ONLY = {
    "operating_point": "a subject is verified at the gallery's operating point",
    "no_quality_check": "a subject is verified only with a face of passing quality",
    "detector": "the probe goes through the gallery's face pipeline",
    "max_side": "the probe goes through the gallery's face pipeline",
}
_SUBJECT_ONLY = ("purpose", "case_ref", "actor")


def _refuse_options_of_the_other_mode(with_subject: bool) -> None:
    """Refuse an option typed on the command line that the chosen mode of verify
    would ignore (a typed --operating-point, say, must never be silently dropped)."""
    context = click.get_current_context()
    options = {p.name: p for p in context.command.params if isinstance(p, click.Option)}

    def typed(name: str) -> bool:
        return context.get_parameter_source(name) is ParameterSource.COMMANDLINE

    def flag(name: str) -> str:
        return max(options[name].opts, key=len)

    if with_subject:
        for name, reason in _PHOTOS_ONLY.items():
            if typed(name):
                raise click.UsageError(
                    f"{flag(name)} applies to comparing two photos, not to verify --subject "
                    f"({reason}): drop it"
                )
    else:
        for name in _SUBJECT_ONLY:
            if typed(name):
                raise click.UsageError(
                    f"{flag(name)} applies to verify --subject only, not to comparing two "
                    "photos: drop it, or add --subject ID"
                )


def _verify_subject(
    image: str,
    subject: str,
    purpose: str | None,
    case_ref: str | None,
    gallery_path: str | None,
    actor: str | None,
    policy: FacePolicy,
) -> None:
    import getpass

    from ..gallery import Gallery

    with Gallery.find(gallery_path) as gallery:
        result = gallery.verify_subject(
            image, subject, purpose=purpose, actor=actor or getpass.getuser(),
            case_ref=case_ref, face_policy=policy,
        )
    _emit(result.to_dict())
    sys.exit(EXIT_MATCH if result.match else EXIT_NO_MATCH)


COMMANDS = [detect, embed, verify]


@click.command()
@click.option(
    "--photos",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("tests/data/lfw"),
    show_default=True,
    help="Folder of identity subfolders of photos.",
)
@click.option(
    "--keep",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Keep the demo's gallery and video in this folder (default: a temporary one).",
)
def demo(photos: Path, keep: Path | None) -> None:
    """Run the boarding-gate demo on the sample photos shipped in the repository."""
    ok = run_gate_demo(photos, click.echo, keep)
    sys.exit(0 if ok else 1)


COMMANDS.append(demo)
