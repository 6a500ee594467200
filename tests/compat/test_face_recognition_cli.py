"""The shim's ``face_recognition`` and ``face_detection`` commands print what the originals do."""

from __future__ import annotations

import shutil
from pathlib import Path

import click
import numpy as np
import PIL.Image
import pytest
from click.testing import CliRunner

from facetrust.compat.face_recognition import face_detection_cli, face_recognition_cli

pytestmark = pytest.mark.slow  # each test runs a CLI in a subprocess


@pytest.fixture(scope="module")
def known_people(images: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of known people: one photo each of obama and biden, the second in a subfolder."""
    folder = tmp_path_factory.mktemp("known")
    shutil.copy(images / "obama.jpg", folder / "obama.jpg")
    (folder / "more").mkdir()
    shutil.copy(images / "biden.jpg", folder / "more" / "biden.jpg")
    (folder / "notes.txt").write_text("not an image")
    return folder


def run(command: object, *args: str) -> str:
    result = CliRunner().invoke(command, list(args))  # type: ignore[arg-type]
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("command", [face_recognition_cli.main, face_detection_cli.main])
def test_commands_have_help(command: object) -> None:
    assert "Show this message and exit." in run(command, "--help")


def test_recognition_options_keep_face_recognition_names_and_defaults() -> None:
    params = face_recognition_cli.main.params
    assert [p.name for p in params if isinstance(p, click.Argument)] == [
        "known_people_folder",
        "image_to_check",
    ]
    options = {p.name: p.default for p in params if isinstance(p, click.Option)}
    assert options == {
        "cpus": 1,
        "tolerance": 0.6,
        "show_distance": False,
    }
    detection = face_detection_cli.main.params
    assert [p.name for p in detection if isinstance(p, click.Argument)] == ["image_to_check"]
    assert {p.name: p.default for p in detection if isinstance(p, click.Option)} == {
        "cpus": 1,
        "model": "hog",
    }


def test_recognition_names_a_known_person(known_people: Path, images: Path) -> None:
    image = str(images / "obama2.jpg")
    assert run(face_recognition_cli.main, str(known_people), image) == f"{image},obama\n"


def test_recognition_shrinks_big_images_and_still_names_them(
    known_people: Path, images: Path
) -> None:
    image = str(images / "obama3.jpg")
    assert f"{image},obama" in run(face_recognition_cli.main, str(known_people), image)


def test_recognition_show_distance_prints_the_distance(known_people: Path, images: Path) -> None:
    image = str(images / "obama.jpg")
    output = run(face_recognition_cli.main, str(known_people), image, "--show-distance", "1")
    assert output == f"{image},obama,0.0\n"


def test_recognition_tolerance_zero_gives_unknown_person(known_people: Path, images: Path) -> None:
    image = str(images / "obama2.jpg")
    output = run(face_recognition_cli.main, str(known_people), image, "--tolerance", "0")
    assert output == f"{image},unknown_person\n"
    shown = run(
        face_recognition_cli.main, str(known_people), image, "--tolerance", "0",
        "--show-distance", "true",
    )  # fmt: skip
    assert shown == f"{image},unknown_person,None\n"


def test_recognition_reports_images_without_faces(known_people: Path, tmp_path: Path) -> None:
    blank = tmp_path / "blank.png"
    PIL.Image.fromarray(np.full((80, 80, 3), 128, np.uint8)).save(blank)
    output = run(face_recognition_cli.main, str(known_people), str(blank))
    assert output == f"{blank},no_persons_found\n"


def test_recognition_warns_about_known_images_without_faces(
    known_people: Path, tmp_path: Path, images: Path
) -> None:
    folder = tmp_path / "known"
    shutil.copytree(known_people, folder)
    PIL.Image.fromarray(np.full((80, 80, 3), 128, np.uint8)).save(folder / "nobody.png")
    output = run(face_recognition_cli.main, str(folder), str(images / "biden.jpg"))
    assert f"WARNING: No faces found in {folder / 'nobody.png'}. Ignoring file." in output
    assert output.endswith(f"{images / 'biden.jpg'},biden\n")


def test_recognition_of_a_folder_checks_every_image(known_people: Path, images: Path) -> None:
    output = run(face_recognition_cli.main, str(known_people), str(known_people))
    assert sorted(output.splitlines()) == sorted(
        [f"{known_people / 'obama.jpg'},obama", f"{known_people / 'more' / 'biden.jpg'},biden"]
    )


def test_detection_prints_file_and_box(images: Path) -> None:
    image = str(images / "obama.jpg")
    output = run(face_detection_cli.main, image)
    name, *box = output.strip().split(",")
    assert name == image
    assert len(box) == 4
    assert run(face_detection_cli.main, image, "--model", "hog") == output


def test_detection_of_a_folder_lists_each_image(images: Path) -> None:
    output = run(face_detection_cli.main, str(images))
    for name in ("obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg", "obama_partial_face2.jpg"):
        assert f"{images / name}," in output
    assert "LICENSE" not in output and "SOURCE.md" not in output


def test_image_files_in_folder_reads_one_level_for_detection_all_for_recognition(
    known_people: Path,
) -> None:
    assert face_detection_cli.image_files_in_folder(str(known_people)) == [
        str(known_people / "obama.jpg")
    ]
    assert sorted(face_recognition_cli.image_files_in_folder(str(known_people))) == [
        str(known_people / "more" / "biden.jpg"),
        str(known_people / "obama.jpg"),
    ]


@pytest.mark.slow
def test_detection_with_the_cnn_model(tmp_path: Path, images: Path) -> None:
    lfw = Path(__file__).parent.parent / "data" / "lfw"
    photo = next(iter(sorted(lfw.glob("*/*_0001.jpg"))))
    output = run(face_detection_cli.main, str(photo), "--model", "cnn")
    assert output.startswith(f"{photo},")
    assert len(output.strip().split(",")) == 5


@pytest.mark.slow
def test_recognition_with_two_processes(known_people: Path) -> None:
    output = run(face_recognition_cli.main, str(known_people), str(known_people), "--cpus", "2")
    # The pool's children print to the real stdout, not the runner's, as in face_recognition.
    assert "Traceback" not in output
