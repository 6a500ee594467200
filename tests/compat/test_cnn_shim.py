"""The face_recognition shim's CNN detector: ONNX Runtime where it computes as dlib does."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

# dlib's own errors for these inputs leave its process's heap damaged: later native calls
# in the same process (a HOG detector built, the final garbage collection) then abort or
# segfault at random. So the inputs dlib refuses are sent in a child process of their own,
# which reports and leaves with os._exit, before anything else touches the damaged heap.
_CHILD = textwrap.dedent(
    """
    import json
    import os
    import numpy as np
    import facetrust.compat.face_recognition as face_recognition
    from facetrust.compat.face_recognition import api

    def message(call):
        try:
            call()
        except RuntimeError as error:
            return str(error)
        return "no error"

    print(json.dumps([
        message(lambda: face_recognition.face_locations(
            np.zeros((5, 5, 3), np.uint8), 0, model="cnn")),
        str(face_recognition.face_locations(np.zeros((20, 20, 3), np.uint8), model="cnn")),
        message(lambda: face_recognition.face_locations(
            np.zeros((50, 50, 3), np.float32), model="cnn")),
        message(lambda: api._raw_face_locations_batched(
            [np.zeros((40, 40, 3), np.uint8), np.zeros((50, 50, 3), np.uint8)])),
    ]))
    os.sys.stdout.flush()
    os._exit(0)
    """
)


def test_shim_sends_tiny_and_odd_images_to_dlib() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _CHILD], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    too_small, tiny, wrong_type, mixed = json.loads(result.stdout.splitlines()[-1])
    # dlib refuses a 5x5 image with its own RuntimeError; the shim lets it.
    assert "Filter windows must be small enough" in too_small
    assert tiny == "[]"
    assert "Unsupported image type" in wrong_type
    assert "same dimensions" in mixed
