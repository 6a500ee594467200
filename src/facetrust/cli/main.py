"""Entry point of the ``facetrust`` command and the one place errors become messages.

Every command opens the library, calls it, and prints the result. Library
errors (:class:`~facetrust.errors.FacetrustError`) become one line on stderr
and exit status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from ..errors import FacetrustError, ImageTooLarge
from . import audit, batch, evaluate, faces, gallery, gate, keys

EXIT_ERROR = 2


class FacetrustGroup(click.Group):
    """A click group that turns library errors into one clear line."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except FacetrustError as error:
            if ctx.find_root().params.get("debug"):
                raise
            option = f" ({_parameter(ctx, error.field)})" if error.field else ""
            if isinstance(error, ImageTooLarge) and error.setting:  # the CLI's user runs it
                option += " " + error.cap_hint()
            click.echo(f"error: {error}{option}", err=True)
            sys.exit(EXIT_ERROR)


def _parameter(ctx: click.Context, field: str) -> str:
    """How the command line names the parameter ``field``: ``IMAGE_B`` for an argument
    of the command that failed, ``option --case-ref`` otherwise."""
    command: click.Command | None = ctx.command
    name = ctx.invoked_subcommand
    while isinstance(command, click.Group) and name:
        command, name = command.get_command(ctx, name), None
    for param in getattr(command, "params", []):
        if param.name == field and isinstance(param, click.Argument):
            return f"argument {param.human_readable_name}"
    return f"option --{field.replace('_', '-')}"


@click.group(cls=FacetrustGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.version_option(package_name="facetrust")
def cli(debug: bool) -> None:
    """facetrust: face recognition with consent, fairness measurement and an audit trail."""


for command in faces.COMMANDS:
    cli.add_command(command)
for command in [
    *gallery.COMMANDS,
    *batch.COMMANDS,
    *audit.COMMANDS,
    *keys.COMMANDS,
    *gate.COMMANDS,
    *evaluate.COMMANDS,
]:
    cli.add_command(command)

# The service: `facetrust serve`, and the API key commands in the `keys` group
# (joining the gallery's `keys rotate` when that group exists).
from . import service as _service  # noqa: E402

cli.add_command(_service.serve)
_keys_group = cli.commands.get("keys")
if not isinstance(_keys_group, click.Group):
    _keys_group = _service.keys_group
    cli.add_command(_keys_group)
for _command in _service.API_KEY_COMMANDS:
    _keys_group.add_command(_command)
