"""``facetrust serve`` and ``facetrust keys create|list|revoke|seal`` (API keys of the service)."""

from __future__ import annotations

import getpass
import json
from typing import TYPE_CHECKING

import click

from ..gallery.config import GALLERY_ENV

if TYPE_CHECKING:
    from ..service.apikeys import ApiKeys

gallery_option = click.option(
    "--gallery",
    "gallery_path",
    type=click.Path(),
    default=None,
    envvar=GALLERY_ENV,
    help="Gallery config file or folder (default: the current folder).",
)


@click.command()
@gallery_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", default=1, show_default=True, type=int,
              help="Server processes (each opens the gallery; they share the rate limits).")
@click.option("--reports-dir", type=click.Path(file_okay=False), default=None,
              help="Folder of evaluation reports shown to auditors.")
@click.option("--max-body-bytes", type=int, default=None,
              help="Request body cap (bytes); images are also held to FACETRUST_MAX_BYTES "
              "where that is lower.")
@click.option("--max-pixels", type=int, default=None,
              help="Image cap (width x height); FACETRUST_MAX_PIXELS wins where it is lower.")
@click.option("--identify-per-minute", type=float, default=None,
              help="Identification requests per minute per key.")
@click.option("--request-timeout", "request_timeout_s", type=float, default=None,
              help="Seconds before a request is answered 503.")
@click.option("--secure-cookies/--no-secure-cookies", default=None,
              help="Mark the console cookie Secure (needed behind HTTPS).")
def serve(
    gallery_path: str | None, host: str, port: int, workers: int, reports_dir: str | None,
    max_body_bytes: int | None, max_pixels: int | None, identify_per_minute: float | None,
    request_timeout_s: float | None, secure_cookies: bool | None,
) -> None:
    """Serve the REST API, its OpenAPI document (/openapi.json) and the web console (/console/)."""
    from ..service.server import serve as run
    from ..service.settings import ServiceSettings

    settings = ServiceSettings.from_env(
        gallery=gallery_path, reports_dir=reports_dir, max_body_bytes=max_body_bytes,
        max_pixels=max_pixels, identify_per_minute=identify_per_minute,
        request_timeout_s=request_timeout_s, secure_cookies=secure_cookies,
    )
    run(settings, host=host, port=port, workers=workers)


def api_keys(gallery_path: str | None) -> ApiKeys:
    """The API keys of the gallery the CLI is pointed at (the service's own key file)."""
    from ..service.server import api_keys_for
    from ..service.settings import ServiceSettings

    return api_keys_for(ServiceSettings.from_env(gallery=gallery_path))


@click.command("create")
@click.option(
    "--role", required=True, type=click.Choice(["enroller", "operator", "auditor", "admin"])
)
@click.option("--name", required=True, help="Who or what uses the key (a person or a system).")
@click.option("--json", "as_json", is_flag=True, help="Print the record as JSON.")
@gallery_option
def keys_create(role: str, name: str, as_json: bool, gallery_path: str | None) -> None:
    """Create an API key for the service; the key is printed this once."""
    created = api_keys(gallery_path).create(role, name, created_by=f"cli:{getpass.getuser()}")
    if as_json:
        click.echo(json.dumps(created.to_dict(), indent=2))
        return
    click.echo(created.key)
    click.echo(
        f"API key {created.record.key_id} ({role}, {name}) created. Store it now: it is shown "
        "only this once.",
        err=True,
    )


@click.command("list")
@gallery_option
def keys_list(gallery_path: str | None) -> None:
    """List the service's API keys (ids, roles, names; never secrets)."""
    click.echo(json.dumps([k.to_dict() for k in api_keys(gallery_path).list()], indent=2))


@click.command("revoke")
@click.argument("key_id")
@gallery_option
def keys_revoke(key_id: str, gallery_path: str | None) -> None:
    """Revoke an API key (refused from its next request on)."""
    click.echo(json.dumps(api_keys(gallery_path).revoke(key_id).to_dict(), indent=2))


@click.command("seal")
@click.option("--yes", is_flag=True, help="Seal every listed key without asking.")
@gallery_option
def keys_seal(yes: bool, gallery_path: str | None) -> None:
    """Seal API keys made before key rows were sealed, after you review them (audited).

    Lists every key whose row has no seal; seal only keys you recognise (a row
    written into the service database by someone else looks the same), and
    revoke the others with `facetrust keys revoke KEY_ID`.
    """
    keys = api_keys(gallery_path)
    tampered = keys.tampered()
    for key in tampered:
        click.echo(
            f"warning: the row of API key {key.key_id} ({key.role.value}, {key.name!r}) does not "
            "fit its seal: it was changed without the gallery's key. It is not sealed again; "
            f"revoke it with `facetrust keys revoke {key.key_id}`.", err=True,
        )
    unsealed = keys.unsealed()
    if not unsealed:
        click.echo("No API key rows to seal.")
        return
    click.echo(f"{len(unsealed)} API key row(s) without a seal:")
    for key in unsealed:
        state = f"revoked {key.revoked_at}" if key.revoked_at else "active"
        click.echo(f"  {key.key_id}  {key.role.value:<8}  {key.name!r}  created {key.created_at} "
                   f"by {key.created_by}  ({state})")
    if not yes:
        click.confirm("Seal these keys? Answer yes only if you recognise every one", abort=True)
    sealed = keys.seal(unsealed, sealed_by=f"cli:{getpass.getuser()}")
    click.echo(f"sealed {len(sealed)} API key(s): {', '.join(k.key_id for k in sealed)}")
    if len(sealed) < len(unsealed):
        click.echo("Some rows changed while you reviewed them and were left unsealed: run "
                   "`facetrust keys seal` again.", err=True)


@click.group("keys")
def keys_group() -> None:
    """Manage keys: the service's API keys."""


API_KEY_COMMANDS = [keys_create, keys_list, keys_revoke, keys_seal]
