"""Kill the installed ``facetrust`` command at a named point, as a crash (SIGKILL) would.

:func:`kill_point_settings` writes a ``sitecustomize`` module that Python
imports at start-up in the command's process (it is put first on
``PYTHONPATH``). It kills the process with SIGKILL, from inside, at one point:

* ``stage``: when the operation reaches the named stage of
  :meth:`facetrust.gallery.parts.GalleryParts.pause` (the points tests may
  interrupt, e.g. ``"erase:key-destroyed"``);
* ``call``: when ``module:attribute`` (a function or method of the library,
  e.g. ``"facetrust.gallery.index_file:load_index"`` or
  ``"facetrust.audit:AuditLog.append"``) is called; with ``record``,
  its first argument is written to that file first (e.g. the path it was
  given, for the test to look at what the process left).

Nothing else of the command changes: it is the installed entry point, killed
where a crash would be unlucky.
"""

from __future__ import annotations

import os
from pathlib import Path

#: The environment variables the sitecustomize module reads.
STAGE_VARIABLE = "KILL_POINT_STAGE"
CALL_VARIABLE = "KILL_POINT_CALL"
RECORD_VARIABLE = "KILL_POINT_RECORD"

SITECUSTOMIZE = '''
import os
import signal

_stage = os.environ.get("KILL_POINT_STAGE")
_call = os.environ.get("KILL_POINT_CALL")
_record = os.environ.get("KILL_POINT_RECORD")


def _die():
    os.kill(os.getpid(), signal.SIGKILL)


if _stage:
    from facetrust.gallery.parts import GalleryParts

    def _pause(self, stage):
        if stage == _stage:
            _die()

    GalleryParts.pause = _pause

if _call:
    import importlib

    _module, _path = _call.split(":")
    _owner = importlib.import_module(_module)
    *_owners, _attribute = _path.split(".")
    for _name in _owners:  # "Class.method"
        _owner = getattr(_owner, _name)
    _original = getattr(_owner, _attribute)

    def _killing(*args, **kwargs):
        if _record and args:
            with open(_record, "w") as record:
                record.write(str(args[0]))
        _die()
        return _original(*args, **kwargs)

    setattr(_owner, _attribute, _killing)
'''


def kill_point_settings(
    folder: Path, *, stage: str | None = None, call: str | None = None,
    record: Path | None = None,
) -> dict[str, str]:
    """Environment settings (for :func:`installed_command.installed_runner`) that make
    the command SIGKILL itself at ``stage`` or on calling ``call`` (writing its first
    argument to ``record``); writes the start-up module into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)
    path = os.pathsep.join(p for p in (str(folder), os.environ.get("PYTHONPATH", "")) if p)
    settings = {"PYTHONPATH": path}
    if stage is not None:
        settings[STAGE_VARIABLE] = stage
    if call is not None:
        settings[CALL_VARIABLE] = call
    if record is not None:
        settings[RECORD_VARIABLE] = str(record)
    return settings
