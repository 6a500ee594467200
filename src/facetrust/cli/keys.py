"""``facetrust keys rotate|rekey-templates``: renew keys without re-enrolling anyone."""

from __future__ import annotations

import click

from ..gallery import Gallery, GalleryConfig, find_config
from ..gallery.key_file import rotate_key_file
from .gallery import actor_option, emit, gallery_option


@click.group()
def keys() -> None:
    """Rotate the master key and renew template protection."""


@keys.command("rotate")
@click.option(
    "--retired-key-file", type=click.Path(exists=True, dir_okay=False), default=None,
    help="A copy of an earlier master key file, for keys a rotation left under it.",
)
@gallery_option
@actor_option
def keys_rotate(retired_key_file: str | None, gallery_path: str | None, actor: str) -> None:
    """Replace the master key file, re-wrapping every data key (resumes if interrupted)."""
    config = GalleryConfig.load(find_config(gallery_path))
    emit(rotate_key_file(config, actor=actor, retired_key_file=retired_key_file))


@keys.command("rekey-templates")
@gallery_option
@actor_option
def keys_rekey(gallery_path: str | None, actor: str) -> None:
    """Renew every template under a new protection secret (old copies become unlinkable)."""
    with Gallery.find(gallery_path) as gallery:
        emit(gallery.rekey_templates(actor=actor))


COMMANDS = [keys]
