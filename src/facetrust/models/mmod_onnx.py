"""dlib's MMOD CNN face detector with its network run by ONNX Runtime.

dlib's ``cnn_face_detection_model_v1`` runs ``mmod_human_face_detector.dat``
(face_recognition's ``model="cnn"``, facetrust's ``detector="cnn"``). Without
a GPU dlib computes its convolutions in plain C++, seconds for one photo.
Here the
convolutions run in ONNX Runtime and everything around them is done as dlib
does it, from the same formulas in dlib's sources (``dnn/input.h``,
``dnn/loss.h``, ``image_transforms/image_pyramid.h``,
``geometry/drectangle.h``), so that the boxes are dlib's:

- upsampling (``pyramid_up`` with ``pyramid_down<2>``) and each level of the
  image pyramid are dlib's own bilinear ``resize_image``, called through the
  dlib module, on uint8 RGB and on the float planes respectively;
- the levels are tiled into one image as ``input_rgb_image_pyramid`` tiles
  them (``compute_tiled_image_pyramid_details`` with ``pyramid_down<6>``),
  in the same float32 values;
- every output above 0 becomes an 80x80 window mapped back through the
  convolutions and the pyramid, rounded to integer pixels, ranked by score
  and pruned with the model's own non-max suppression; boxes of upsampled
  images are mapped down as dlib's Python binding maps them.

The network's output differs from dlib's by float rounding only; a box could
differ only if a score sat within that rounding of 0 or of another
overlapping window's. Images dlib refuses (not uint8 gray or RGB) never reach
this module: the face_recognition shim hands them to dlib, which raises its
own error.

The network is converted from the installed weights on first use and cached
under the SHA-256 of the weights (:func:`convert_dlib_mmod`), as the
descriptor network is (:mod:`.onnx_backend`); nothing converted is shipped.
:class:`OnnxMmodDetector` is the :class:`~facetrust.models.base.Detector`
the pipeline uses; :class:`MmodOnnxDetector` is called as dlib's own
detector object, for the face_recognition shim.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import ModelError
from ..faces import Box
from .base import Detection
from .dlib_backend import import_dlib, model_path
from .dlib_format import (
    Conv,
    DlibStream,
    Relu,
    open_stream,
    read_conv,
    skip_training_state,
)
from .onnx_backend import cached_conversion, cpu_session, thread_count

#: Names the converted detector network in the conversion cache.
MMOD_MODEL_NAME = "dlib-mmod"
#: Bumped whenever the exported graph changes, so old cached conversions are not reused.
CONVERTER_VERSION = 1

#: Smallest image side the ONNX detector runs on; dlib refuses some smaller images.
MIN_SIDE = 32

#: dlib's ``pyramid_down<6>``: each pyramid level is 5/6 the size of the one above
#: (``pyramid_rate``), and ``point_up`` maps a point one level up as ``p * 6/5 + 0.3``.
PYRAMID_RATE = (6 - 1.0) / 6
PYRAMID_UP_RATIO = 6 / (6 - 1.0)
#: ``compute_tiled_image_pyramid_details`` stops below this many rows.
MIN_LEVEL_HEIGHT = 5


@dataclass(frozen=True)
class MmodNetwork:
    """``mmod_human_face_detector.dat`` read from disk.

    Attributes
    ----------
    window : (width, height)
        The sliding window, in pixels of a pyramid level.
    iou_threshold, covered_threshold : float
        Non-max suppression: a window is dropped when its intersection over
        union with a kept one exceeds ``iou_threshold``, or the intersection
        covers more than ``covered_threshold`` of either.
    mean : (red, green, blue)
        Subtracted from each pixel before dividing by 256.
    padding, outer_padding : int
        Pixels between tiles of the pyramid image, and around it.
    layers : tuple of Conv and Relu
        Batch norm folded into the convolutions, input first.
    """

    window: tuple[int, int]
    iou_threshold: float
    covered_threshold: float
    mean: tuple[float, float, float]
    padding: int
    outer_padding: int
    layers: tuple[Conv | Relu, ...]


@dataclass(frozen=True)
class MmodDetection:
    """One face, as dlib's ``mmod_rectangle``: ``rect`` (a ``dlib.rectangle``), ``confidence``."""

    rect: Any
    confidence: float


def read_mmod_network(path: str | Path) -> MmodNetwork:
    """Read dlib's MMOD face detector network (``mmod_human_face_detector.dat``).

    Raises
    ------
    ModelError
        The file is missing, truncated, corrupt or holds another network.
    """
    stream = open_stream(path)
    if stream.integer() != 1 or stream.string() != "loss_mmod_":
        raise stream.fail("expected a 'loss_mmod_' layer")
    window, iou, covered = _read_mmod_options(stream)
    versions: list[int] = []
    while (version := stream.integer()) != 3:
        if version != 2 or len(versions) > 1000:
            raise stream.fail(f"unexpected layer version {version}")
        versions.append(version)
    mean, padding, outer_padding = _read_pyramid_input(stream)
    layers: list[Conv | Relu] = []
    for index in range(len(versions) + 1):
        name = stream.string()
        if name == "con_4":
            layers.append(read_conv(stream))
        elif name == "bn_con2":
            layers[-1] = _fold_batch_norm(stream, layers[-1])
        elif name == "relu_":
            layers.append(Relu())
        else:
            raise stream.fail(f"unsupported layer {name!r}")
        skip_training_state(stream)
        if index == 0:
            stream.integer()  # sample expansion factor of the layer on the input
    stream.expect_end()
    return MmodNetwork(window, iou, covered, mean, padding, outer_padding, tuple(layers))


def _read_mmod_options(stream: DlibStream) -> tuple[tuple[int, int], float, float]:
    version = stream.integer()
    if version != 1:
        raise stream.fail(f"expected mmod options version 1, found {version}")
    window = (stream.integer(), stream.integer())
    for _ in range(3):  # losses per false alarm and missed target, truth match IoU: training only
        stream.real()
    iou, covered = stream.real(), stream.real()
    stream.real(), stream.real()  # the overlap test for ignored boxes: training only
    return window, iou, covered


def _read_pyramid_input(stream: DlibStream) -> tuple[tuple[float, float, float], int, int]:
    name = stream.string()
    if name not in ("input_rgb_image_pyramid", "input_rgb_image_pyramid2"):
        raise stream.fail(f"expected an 'input_rgb_image_pyramid' layer, found {name!r}")
    mean = (stream.real(), stream.real(), stream.real())
    if name == "input_rgb_image_pyramid2":
        return mean, stream.integer(), stream.integer()
    return mean, 10, 11  # dlib's defaults for files written before the padding was stored


def _fold_batch_norm(stream: DlibStream, below: Conv | Relu) -> Conv:
    # dlib runs a saved bn_con as affine: gamma / sqrt(running variance + eps), then
    # beta - gamma' * running mean; folded here into the convolution below.
    params = stream.tensor().ravel()
    stream.alias(), stream.alias()  # gamma and beta views
    stream.tensor(), stream.tensor()  # batch means and inverse deviations: training only
    running_means = stream.tensor().ravel()
    running_variances = stream.tensor().ravel()
    stream.integer(), stream.integer()  # updates counted, running window size
    for _ in range(4):  # learning rate and weight decay multipliers
        stream.real()
    eps = np.float32(stream.real())
    if not isinstance(below, Conv) or params.size != 2 * below.bias.size:
        raise stream.fail("a batch norm that does not follow a convolution of its size")
    gamma = params[: below.bias.size] / np.sqrt(running_variances + eps)
    beta = params[below.bias.size :] - gamma * running_means
    weights = below.weights * gamma[:, None, None, None]
    return Conv(
        weights.astype(np.float32),
        (below.bias * gamma + beta).astype(np.float32),
        below.stride,
        below.padding,
    )


def build_onnx_model(network: MmodNetwork) -> Any:
    """An ``onnx.ModelProto``: pyramid images (n, 3, rows, cols) float32 to scores (n, 1, r, c)."""
    try:
        import onnx
        from onnx import helper, numpy_helper
    except ImportError:
        raise ModelError(
            "The CNN detector on ONNX Runtime needs the onnx package. Install it with: "
            "pip install onnx"
        ) from None
    nodes, initializers = [], []
    value = "pyramid"
    for index, layer in enumerate(network.layers):
        output = f"layer{index}"
        if isinstance(layer, Conv):
            weights, bias = f"w{index}", f"b{index}"
            initializers += [
                numpy_helper.from_array(layer.weights, weights),
                numpy_helper.from_array(layer.bias, bias),
            ]
            pad_y, pad_x = layer.padding
            nodes.append(
                helper.make_node(
                    "Conv",
                    [value, weights, bias],
                    [output],
                    kernel_shape=list(layer.weights.shape[2:]),
                    strides=list(layer.stride),
                    pads=[pad_y, pad_x, pad_y, pad_x],
                )
            )
        else:
            nodes.append(helper.make_node("Relu", [value], [output]))
        value = output
    nodes.append(helper.make_node("Identity", [value], ["scores"]))
    graph = helper.make_graph(
        nodes,
        "dlib_mmod_face_detector",
        [helper.make_tensor_value_info("pyramid", onnx.TensorProto.FLOAT, ["n", 3, "h", "w"])],
        [helper.make_tensor_value_info("scores", onnx.TensorProto.FLOAT, ["n", 1, "r", "c"])],
        initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def convert_dlib_mmod(weights: Path | None = None, cache_dir: Path | None = None) -> Path:
    """Path of the ONNX conversion of dlib's MMOD detector network, converting it if not cached.

    Parameters
    ----------
    weights : Path, optional
        ``mmod_human_face_detector.dat``; the installed ``face_recognition_models`` copy by default.
    cache_dir : Path, optional
        Defaults to :func:`~.onnx_backend.default_cache_dir`.

    Returns
    -------
    Path
        ``<cache_dir>/dlib-mmod-<sha256 of weights>-c<converter version>.onnx``.

    Raises
    ------
    ModelError
        The weights are missing or corrupt, onnx is missing, or the cache is not writable.
    """
    source = weights or model_path("mmod")
    return cached_conversion(
        f"{MMOD_MODEL_NAME}-c{CONVERTER_VERSION}",
        source,
        lambda: build_onnx_model(read_mmod_network(source)),
        cache_dir,
    )


def tile_levels(
    rows: int, cols: int, padding: int, outer_padding: int
) -> tuple[list[tuple[int, int, int, int]], int, int]:
    """Where each pyramid level of a (rows, cols) image sits in the tiled image.

    dlib's ``compute_tiled_image_pyramid_details`` for ``pyramid_down<6>``: the
    levels go down a first column, then back up a second one beside them.

    Returns
    -------
    rects : list of (left, top, right, bottom), inclusive, one per level
    tiled_rows, tiled_cols : int
    """
    if rows * cols == 0:
        return [], 0, 0
    sizes = [(cols, rows)]
    while True:
        rows, cols = math.floor(PYRAMID_RATE * rows), math.floor(PYRAMID_RATE * cols)
        if rows * cols == 0 or rows < MIN_LEVEL_HEIGHT:
            break
        sizes.append((cols, rows))
    total_height = sum(h + padding for _, h in sizes) - 2 * padding
    first_width, first_height = sizes[0]
    height = previous_width = 0
    for width, level_height in sizes:
        if (
            width <= first_width - previous_width - padding
            and (height - first_height) * 2 >= total_height - first_height
        ):
            break
        height += level_height + padding
        previous_width = width
    height -= padding
    rects: list[tuple[int, int, int, int]] = []
    y = outer_padding
    index = 0
    while y < height + outer_padding and index < len(sizes):
        width, level_height = sizes[index]
        rects.append((outer_padding, y, outer_padding + width - 1, y + level_height - 1))
        y += level_height + padding
        index += 1
    y -= padding
    while index < len(sizes):
        width, level_height = sizes[index]
        right, bottom = outer_padding + first_width - 1, y - 1
        rect = (right - (width - 1), bottom - (level_height - 1), right, bottom)
        if _intersects(rects[0], rect):
            break
        rects.append(rect)
        y -= level_height + padding
        index += 1
    return rects, height + 2 * outer_padding, first_width + 2 * outer_padding


def _intersects(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return max(a[0], b[0]) <= min(a[2], b[2]) and max(a[1], b[1]) <= min(a[3], b[3])


def _area(rect: tuple[float, float, float, float]) -> float:
    left, top, right, bottom = rect
    if left > right or top > bottom:
        return 0.0
    return (right - left + 1) * (bottom - top + 1)


def _round(value: float) -> int:
    return math.floor(value + 0.5)


class MmodOnnxDetector:
    """dlib's CNN face detector: dlib's pre- and post-processing, the network on ONNX Runtime.

    Call it as dlib's ``cnn_face_detection_model_v1``: ``detector(image,
    upsample)`` gives a list of :class:`MmodDetection`; ``detector(images,
    upsample, batch_size=...)`` one list per image. Images must be uint8 gray
    (h, w) or RGB (h, w, 3), the ones of a batch of one size.

    Parameters
    ----------
    weights : Path, optional
        ``mmod_human_face_detector.dat``; the installed ``face_recognition_models`` copy by default.
    threads : int, optional
        ONNX Runtime threads; 0 or None means one per core.
    cache_dir : Path, optional
        Where the conversion is cached (:func:`~.onnx_backend.default_cache_dir` by default).
    """

    def __init__(
        self,
        weights: Path | None = None,
        *,
        threads: int | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        self._weights = weights
        self._cache_dir = cache_dir
        self.threads = thread_count(threads, "MmodOnnxDetector")
        self._network: MmodNetwork | None = None
        self._session: Any = None

    def _load(self) -> tuple[MmodNetwork, Any]:
        if self._network is None or self._session is None:
            weights = self._weights or model_path("mmod")
            network = read_mmod_network(weights)
            self._session = cpu_session(convert_dlib_mmod(weights, self._cache_dir), self.threads)
            self._network = network
        return self._network, self._session

    def __call__(
        self,
        images: npt.NDArray[np.uint8] | Sequence[npt.NDArray[np.uint8]],
        upsample_num_times: int = 0,
        batch_size: int = 128,
    ) -> Any:
        if isinstance(images, np.ndarray):
            return self.detect([images], upsample_num_times, batch_size)[0]
        return self.detect(list(images), upsample_num_times, batch_size)

    def detect(
        self,
        images: Sequence[npt.NDArray[np.uint8]],
        upsample_num_times: int = 0,
        batch_size: int = 128,
    ) -> list[list[MmodDetection]]:
        """Faces in each of ``images`` (uint8 gray or RGB, all of one size), one list per image."""
        network, session = self._load()
        dlib = import_dlib()
        rgb = [_upsampled(_as_rgb(image), upsample_num_times, dlib) for image in images]
        results: list[list[MmodDetection]] = []
        for start in range(0, len(rgb), max(1, batch_size)):
            batch = rgb[start : start + max(1, batch_size)]
            pyramid, rects = _tiled_pyramid(batch, network, dlib)
            if not rects:
                results += [[] for _ in batch]
                continue
            scores = session.run(None, {"pyramid": pyramid})[0]
            for sample in scores:
                found = _detections(sample[0], rects, network)
                results.append([_scaled_down(d, upsample_num_times, dlib) for d in found])
        return results


def _as_rgb(image: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    return image


def _upsampled(image: npt.NDArray[np.uint8], times: int, dlib: Any) -> npt.NDArray[np.uint8]:
    # dlib's pyramid_up with pyramid_down<2>: resize_image to the size of the image
    # rectangle mapped up, p -> (p + (1.25, 0.75)) * 2, corners rounded.
    for _ in range(max(0, times)):
        rows, cols = image.shape[:2]
        out_rows = _round((rows - 1 + 0.75) * 2) + 1
        out_cols = _round((cols - 1 + 1.25) * 2) + 1
        image = np.asarray(dlib.resize_image(np.ascontiguousarray(image), out_rows, out_cols))
    return image


def _tiled_pyramid(
    images: Sequence[npt.NDArray[np.uint8]], network: MmodNetwork, dlib: Any
) -> tuple[npt.NDArray[np.float32], list[tuple[int, int, int, int]]]:
    rows, cols = images[0].shape[:2]
    rects, tiled_rows, tiled_cols = tile_levels(rows, cols, network.padding, network.outer_padding)
    pyramid = np.zeros((len(images), 3, tiled_rows, tiled_cols), np.float32)
    if not rects:
        return pyramid, rects
    mean = np.asarray(network.mean, np.float32)
    left, top, right, bottom = rects[0]
    for index, image in enumerate(images):
        planes = (image.astype(np.float32) - mean) / np.float32(256)
        pyramid[index, :, top : bottom + 1, left : right + 1] = planes.transpose(2, 0, 1)
        for (sl, st, sr, sb), (dl, dt, dr, db) in zip(rects, rects[1:], strict=False):
            for channel in range(3):
                source = np.ascontiguousarray(pyramid[index, channel, st : sb + 1, sl : sr + 1])
                pyramid[index, channel, dt : db + 1, dl : dr + 1] = dlib.resize_image(
                    source, db - dt + 1, dr - dl + 1
                )
    return pyramid, rects


def _detections(
    scores: npt.NDArray[np.float32],
    rects: list[tuple[int, int, int, int]],
    network: MmodNetwork,
) -> list[tuple[tuple[int, int, int, int], float]]:
    """Windows scoring above 0, in image coordinates, best first, after non-max suppression."""
    rows, cols = np.nonzero(scores > 0)
    candidates = []
    half_width = (network.window[0] - 1) / 2
    half_height = (network.window[1] - 1) / 2
    convolutions = [layer for layer in network.layers if isinstance(layer, Conv)]
    for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
        x, y = float(c), float(r)
        for conv in reversed(convolutions):
            kernel_rows, kernel_cols = conv.weights.shape[2:]
            x = x * conv.stride[1] - conv.padding[1] + kernel_cols // 2
            y = y * conv.stride[0] - conv.padding[0] + kernel_rows // 2
        box = _to_image((x - half_width, y - half_height, x + half_width, y + half_height), rects)
        candidates.append((box, float(scores[r, c])))
    candidates.sort(key=lambda candidate: candidate[1], reverse=True)
    kept: list[tuple[tuple[int, int, int, int], float]] = []
    for box, score in candidates:
        if not any(_overlaps(other, box, network) for other, _ in kept):
            kept.append((box, score))
    return kept


def _to_image(
    box: tuple[float, float, float, float], rects: list[tuple[int, int, int, int]]
) -> tuple[int, int, int, int]:
    # tiled_pyramid_to_image: the level nearest the box centre (rounded to a pixel),
    # then point_up of pyramid_down<6> once per level below the top, then rounded.
    centre_x = _round((box[0] + box[2]) / 2)
    centre_y = _round((box[1] + box[3]) / 2)
    level = _nearest_level(rects, centre_x, centre_y)
    origin_x, origin_y = rects[level][0], rects[level][1]
    left, top, right, bottom = (
        box[0] - origin_x,
        box[1] - origin_y,
        box[2] - origin_x,
        box[3] - origin_y,
    )
    for _ in range(level):
        left, top = left * PYRAMID_UP_RATIO + 0.3, top * PYRAMID_UP_RATIO + 0.3
        right, bottom = right * PYRAMID_UP_RATIO + 0.3, bottom * PYRAMID_UP_RATIO + 0.3
    return _round(left), _round(top), _round(right), _round(bottom)


def _nearest_level(rects: list[tuple[int, int, int, int]], x: int, y: int) -> int:
    best, best_distance = 0, math.inf
    for index, (left, top, right, bottom) in enumerate(rects):
        if left <= x <= right and top <= y <= bottom:
            return index
        nearest_x, nearest_y = min(max(x, left), right), min(max(y, top), bottom)
        distance = math.hypot(nearest_x - x, nearest_y - y)
        if distance < best_distance:
            best, best_distance = index, distance
    return best


def _overlaps(
    a: tuple[int, int, int, int], b: tuple[int, int, int, int], network: MmodNetwork
) -> bool:
    inner = _area((max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])))
    if inner == 0:
        return False
    outer = _area((min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])))
    return (
        inner / outer > network.iou_threshold
        or inner / _area(a) > network.covered_threshold
        or inner / _area(b) > network.covered_threshold
    )


def _scaled_down(
    detection: tuple[tuple[int, int, int, int], float], times: int, dlib: Any
) -> MmodDetection:
    # pyramid_down<2>::rect_down, applied ``times`` times, then rounded.
    (left, top, right, bottom), score = detection
    x0, y0, x1, y1 = float(left), float(top), float(right), float(bottom)
    for _ in range(max(0, times)):
        x0, y0, x1, y1 = x0 / 2.0 - 1.25, y0 / 2.0 - 0.75, x1 / 2.0 - 1.25, y1 / 2.0 - 0.75
    rect = dlib.rectangle(_round(x0), _round(y0), _round(x1), _round(y1))
    return MmodDetection(rect, score)


class OnnxMmodDetector:
    """dlib's CNN (MMOD) face detector as a :class:`~facetrust.models.base.Detector`.

    The same boxes as :class:`~facetrust.models.dlib_backend.CnnDetector`
    (dlib's ``cnn_face_detection_model_v1``), about ten times faster on a CPU;
    ``name`` is the same, ``backend`` differs. Boxes are in the coordinates of
    the image given, right and bottom exclusive; ``confidence`` is the
    network's score (higher is more face-like, above 0 to be reported).

    Parameters
    ----------
    weights, threads, cache_dir :
        As for :class:`MmodOnnxDetector`.
    """

    name = "dlib-mmod"
    backend = "onnxruntime"

    def __init__(
        self,
        weights: Path | None = None,
        *,
        threads: int | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        self._detector = MmodOnnxDetector(weights, threads=threads, cache_dir=cache_dir)

    def detect(self, image: npt.NDArray[np.uint8], upsample: int = 0) -> list[Detection]:
        """Faces in ``image`` (uint8 gray (h, w) or RGB (h, w, 3)), best score first.

        Images under :data:`MIN_SIDE` pixels on a side hold no face the
        80-pixel window could find (dlib refuses the smallest with an error);
        they give no detection.
        """
        if min(image.shape[:2]) < MIN_SIDE:
            return []
        found = self._detector.detect([np.ascontiguousarray(image)], max(0, upsample))[0]
        return [
            Detection(
                Box(d.rect.left(), d.rect.top(), d.rect.right() + 1, d.rect.bottom() + 1),
                d.confidence,
            )
            for d in found
        ]
