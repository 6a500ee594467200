"""face_recognition's ``face_recognition`` command: name the known people in images.

Run it with ``python -m facetrust.compat.face_recognition.face_recognition_cli
KNOWN_PEOPLE_FOLDER IMAGE_TO_CHECK [--cpus N] [--tolerance T]
[--show-distance true]``. Each known person is one image named after them.
Each face found prints ``<file>,<name>`` (``<file>,<name>,<distance>`` with
``--show-distance``) for every known person within the tolerance, else
``<file>,unknown_person``; an image without faces prints
``<file>,no_persons_found``, as face_recognition prints them.

This is face_recognition's 1:N search by comparison loop, kept for
compatibility; ``docs/compat.md`` shows the consented ``Gallery`` way.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
from collections.abc import Sequence
from typing import Any

import click
import numpy as np
import numpy.typing as npt
import PIL.Image

from . import api
from .face_detection_cli import IMAGE_NAME

#: Images larger than this on their longer side are shrunk before encoding.
MAX_SIDE = 1600


def scan_known_people(known_people_folder: str) -> tuple[list[str], list[npt.NDArray[Any]]]:
    """Names (file names without extension) and the first face encoding of each image.

    Images without a face are skipped with a warning; for images with several
    faces only the first is used, also with a warning.
    """
    names: list[str] = []
    encodings: list[npt.NDArray[Any]] = []
    for file in image_files_in_folder(known_people_folder):
        found = api.face_encodings(api.load_image_file(file))
        if len(found) > 1:
            click.echo(
                f"WARNING: More than one face found in {file}. Only considering the first face."
            )
        if not found:
            click.echo(f"WARNING: No faces found in {file}. Ignoring file.")
            continue
        names.append(os.path.splitext(os.path.basename(file))[0])
        encodings.append(found[0])
    return names, encodings


def print_result(filename: str, name: str, distance: Any, show_distance: bool = False) -> None:
    """Print ``<file>,<name>``, or ``<file>,<name>,<distance>`` with ``show_distance``."""
    click.echo(f"{filename},{name},{distance}" if show_distance else f"{filename},{name}")


def test_image(
    image_to_check: str,
    known_names: Sequence[str],
    known_face_encodings: Sequence[npt.NDArray[Any]],
    tolerance: float = 0.6,
    show_distance: bool = False,
) -> None:
    """Print who each face in ``image_to_check`` is among the known people."""
    image = api.load_image_file(image_to_check)
    if max(image.shape) > MAX_SIDE:
        thumbnail = PIL.Image.fromarray(image)
        thumbnail.thumbnail((MAX_SIDE, MAX_SIDE), PIL.Image.Resampling.LANCZOS)
        image = np.array(thumbnail)
    unknown_encodings = api.face_encodings(image)
    for encoding in unknown_encodings:
        distances = api.face_distance(known_face_encodings, encoding)
        matches = [
            (name, d) for name, d in zip(known_names, distances, strict=True) if d <= tolerance
        ]
        for name, distance in matches:
            print_result(image_to_check, name, distance, show_distance)
        if not matches:
            print_result(image_to_check, "unknown_person", None, show_distance)
    if not unknown_encodings:
        print_result(image_to_check, "no_persons_found", None, show_distance)


test_image.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


def image_files_in_folder(folder: str) -> list[str]:
    """The image files in ``folder`` and all its subfolders."""
    return [
        os.path.join(root, name)
        for root, _, names in os.walk(folder)
        for name in names
        if IMAGE_NAME.match(name)
    ]


def process_images_in_process_pool(
    images_to_check: list[str],
    known_names: Sequence[str],
    known_face_encodings: Sequence[npt.NDArray[Any]],
    number_of_cpus: int,
    tolerance: float,
    show_distance: bool,
) -> None:
    """Run :func:`test_image` on each image in a pool of ``number_of_cpus`` processes."""
    processes = None if number_of_cpus == -1 else number_of_cpus
    context = (
        multiprocessing.get_context("forkserver")
        if "forkserver" in multiprocessing.get_all_start_methods()
        else multiprocessing.get_context()
    )
    arguments = zip(
        images_to_check,
        itertools.repeat(known_names),
        itertools.repeat(known_face_encodings),
        itertools.repeat(tolerance),
        itertools.repeat(show_distance),
    )
    with context.Pool(processes=processes) as pool:
        pool.starmap(test_image, arguments)


@click.command()
@click.argument("known_people_folder")
@click.argument("image_to_check")
@click.option(
    "--cpus",
    default=1,
    help="number of CPU cores to use in parallel (can speed up processing lots of images). "
    '-1 means "use all in system"',
)
@click.option(
    "--tolerance",
    default=0.6,
    help="Tolerance for face comparisons. Default is 0.6. Lower this if you get multiple "
    "matches for the same person.",
)
@click.option(
    "--show-distance",
    default=False,
    type=bool,
    help="Output face distance. Useful for tweaking tolerance setting.",
)
def main(
    known_people_folder: str, image_to_check: str, cpus: int, tolerance: float, show_distance: bool
) -> None:
    """Name the known people (one image each in KNOWN_PEOPLE_FOLDER) in IMAGE_TO_CHECK."""
    known_names, known_face_encodings = scan_known_people(known_people_folder)
    if not os.path.isdir(image_to_check):
        test_image(image_to_check, known_names, known_face_encodings, tolerance, show_distance)
    elif cpus == 1:
        for image_file in image_files_in_folder(image_to_check):
            test_image(image_file, known_names, known_face_encodings, tolerance, show_distance)
    else:
        process_images_in_process_pool(
            image_files_in_folder(image_to_check),
            known_names,
            known_face_encodings,
            cpus,
            tolerance,
            show_distance,
        )


if __name__ == "__main__":
    main()
