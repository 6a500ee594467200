"""face_recognition's ``face_detection`` command: print the face boxes of images.

Run it with ``python -m facetrust.compat.face_recognition.face_detection_cli
IMAGE_OR_FOLDER [--cpus N] [--model hog|cnn]``. Each face gives one line,
``<file>,<top>,<right>,<bottom>,<left>``, as face_recognition prints it.
Images are searched without upsampling; a folder is read one level deep.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import re

import click

from . import api

#: The file names the commands read: ``.jpg``, ``.jpeg`` or ``.png`` (any case).
IMAGE_NAME = re.compile(r".*\.(jpg|jpeg|png)", flags=re.IGNORECASE)


def print_result(filename: str, location: api.CssBox) -> None:
    """Print one face box as ``<file>,<top>,<right>,<bottom>,<left>``."""
    top, right, bottom, left = location
    click.echo(f"{filename},{top},{right},{bottom},{left}")


def test_image(image_to_check: str, model: str) -> None:
    """Print the box of every face ``model`` finds in one image file."""
    image = api.load_image_file(image_to_check)
    for location in api.face_locations(image, number_of_times_to_upsample=0, model=model):
        print_result(image_to_check, location)


test_image.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


def image_files_in_folder(folder: str) -> list[str]:
    """The image files directly inside ``folder``."""
    return [os.path.join(folder, name) for name in os.listdir(folder) if IMAGE_NAME.match(name)]


def process_images_in_process_pool(
    images_to_check: list[str], number_of_cpus: int, model: str
) -> None:
    """Run :func:`test_image` on each image in a pool of ``number_of_cpus`` processes.

    ``-1`` means one process per core. ``forkserver`` is used where available
    (forking a process that holds dlib models crashes on macOS).
    """
    processes = None if number_of_cpus == -1 else number_of_cpus
    context = (
        multiprocessing.get_context("forkserver")
        if "forkserver" in multiprocessing.get_all_start_methods()
        else multiprocessing.get_context()
    )
    with context.Pool(processes=processes) as pool:
        pool.starmap(test_image, zip(images_to_check, itertools.repeat(model)))


@click.command()
@click.argument("image_to_check")
@click.option(
    "--cpus",
    default=1,
    help='number of CPU cores to use in parallel. -1 means "use all in system"',
)
@click.option(
    "--model",
    default="hog",
    help='Which face detection model to use. Options are "hog" or "cnn".',
)
def main(image_to_check: str, cpus: int, model: str) -> None:
    """Print the location of each face in IMAGE_TO_CHECK (a file or a folder)."""
    if not os.path.isdir(image_to_check):
        test_image(image_to_check, model)
    elif cpus == 1:
        for image_file in image_files_in_folder(image_to_check):
            test_image(image_file, model)
    else:
        process_images_in_process_pool(image_files_in_folder(image_to_check), cpus, model)


if __name__ == "__main__":
    main()
