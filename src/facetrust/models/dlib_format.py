"""Reader of dlib's serialization of the face descriptor network.

Reads ``dlib_face_recognition_resnet_model_v1.dat`` into a typed layer list
(:class:`DlibNetwork`) without dlib, so the network can be rebuilt in another
engine (see :mod:`facetrust.models.onnx_export`).

The format, learnt from dlib's sources (``dlib/serialize.h``,
``dlib/dnn/core.h``, ``layers.h``, ``tensor.h``, ``loss.h``, ``input.h``):

- integers: one control byte (low nibble = number of value bytes, bit 7 =
  negative), then the magnitude little-endian;
- floats and doubles: an integer mantissa and an integer exponent
  (value = mantissa * 2**exponent);
- strings: an integer length, then the bytes; booleans: ``'0'`` or ``'1'``;
- tensors: version 2, four dimensions, then raw little-endian float32 values;
  alias tensors (views into a layer's parameters): version 1 and four
  dimensions, no data.

A network is written from the loss layer down: the loss, then one version
number per layer from the top (2 for a layer with parameters or an operation,
1 for a tag or skip wrapper, 3 for the layer sitting on the input), then the
input layer, then each layer's details from the bottom up, each followed by
its training state (flags and empty gradient tensors), which is skipped.

The wrappers carry no name, so which tag a wrapper is cannot be read from the
file. This reader knows the residual templates of dlib's ResNet examples
(``residual = add_prev1<block<tag1<x>>>`` and ``residual_down =
add_prev2<avg_pool<skip1<tag2<block<tag1<x>>>>>>``): a lone wrapper is
``tag1`` and a pair of wrappers is ``tag2`` then ``skip1``. Any file that does
not fit this shape is refused with :class:`~facetrust.errors.ModelError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from ..errors import ModelError

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class InputRGB:
    """dlib's ``input_rgb_image_sized``: RGB planes, ``(pixel - mean) / 256``.

    ``mean`` is (red, green, blue); ``size`` is (rows, columns).
    """

    mean: tuple[float, float, float]
    size: tuple[int, int]


@dataclass(frozen=True)
class Conv:
    """Cross-correlation: ``weights`` (filters, channels, rows, cols), ``bias`` (filters,)."""

    weights: FloatArray
    bias: FloatArray
    stride: tuple[int, int]
    padding: tuple[int, int]


@dataclass(frozen=True)
class Affine:
    """Per-channel ``x * gamma + beta`` (dlib's folded batch normalisation)."""

    gamma: FloatArray
    beta: FloatArray


@dataclass(frozen=True)
class Relu:
    """Rectified linear unit."""


@dataclass(frozen=True)
class Pool:
    """Max or average pooling; a window of (0, 0) pools over the whole plane."""

    kind: str  # "max" or "avg"
    window: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]


@dataclass(frozen=True)
class Tag:
    """Remembers the current output under ``tag`` (dlib's ``tagN``)."""

    tag: int


@dataclass(frozen=True)
class Skip:
    """Continues from the output remembered under ``tag`` (dlib's ``skipN``)."""

    tag: int


@dataclass(frozen=True)
class AddPrev:
    """Adds the output remembered under ``tag``; the smaller tensor is zero-padded."""

    tag: int


@dataclass(frozen=True)
class FullyConnected:
    """``x @ weights`` with ``weights`` (inputs, outputs); ``bias`` (outputs,) or None."""

    weights: FloatArray
    bias: FloatArray | None


Layer = Conv | Affine | Relu | Pool | Tag | Skip | AddPrev | FullyConnected


@dataclass(frozen=True)
class DlibNetwork:
    """A dlib network read from disk, layers in forward order (input first).

    Attributes
    ----------
    input : InputRGB
    layers : tuple of Layer
    loss : str
        The loss layer's version string, e.g. ``"loss_metric_2"``.
    """

    input: InputRGB
    layers: tuple[Layer, ...]
    loss: str


class DlibStream:
    """A cursor over the file's bytes that reports truncation and corruption by name."""

    def __init__(self, data: bytes, path: Path) -> None:
        self.data = data
        self.pos = 0
        self.path = path

    def expect_end(self) -> None:
        """Raise unless every byte was read (a longer file holds another network)."""
        if self.pos != len(self.data):
            raise self.fail(f"{len(self.data) - self.pos} unexpected bytes after the last layer")

    def fail(self, what: str) -> ModelError:
        return ModelError(
            f"Could not read the dlib network {self.path}: {what} at byte {self.pos} of "
            f"{len(self.data)}. The file is truncated, corrupt or not a dlib face descriptor "
            "network; reinstall face_recognition_models "
            "(pip install --force-reinstall face_recognition_models)."
        )

    def take(self, count: int) -> bytes:
        if count < 0 or self.pos + count > len(self.data):
            raise self.fail(f"expected {count} more bytes, the file ends")
        chunk = self.data[self.pos : self.pos + count]
        self.pos += count
        return chunk

    def integer(self) -> int:
        control = self.take(1)[0]
        size = control & 0x0F
        if size > 8 or control & 0x70:
            self.pos -= 1
            raise self.fail(f"invalid integer control byte 0x{control:02x}")
        value = int.from_bytes(self.take(size), "little")
        return -value if control & 0x80 else value

    def real(self) -> float:
        mantissa = self.integer()
        exponent = self.integer()
        if abs(exponent) > 2000:
            raise self.fail(f"implausible float exponent {exponent}")
        return float(mantissa * 2.0**exponent)

    def string(self, limit: int = 64) -> str:
        length = self.integer()
        if not 0 <= length <= limit:
            raise self.fail(f"implausible string length {length}")
        try:
            return self.take(length).decode("ascii")
        except UnicodeDecodeError:
            raise self.fail("a layer name that is not text") from None

    def boolean(self) -> bool:
        value = self.take(1)
        if value not in (b"0", b"1"):
            self.pos -= 1
            raise self.fail(f"expected a boolean '0' or '1', found {value!r}")
        return value == b"1"

    def tensor(self) -> FloatArray:
        version = self.integer()
        if version != 2:
            raise self.fail(f"expected tensor version 2, found {version}")
        dims = [self.integer() for _ in range(4)]
        if any(d < 0 for d in dims):
            raise self.fail(f"negative tensor dimensions {dims}")
        count = int(np.prod(dims))
        values = np.frombuffer(self.take(4 * count), dtype="<f4").astype(np.float32)
        return values.reshape(dims)

    def alias(self) -> tuple[int, int, int, int]:
        version = self.integer()
        if version != 1:
            raise self.fail(f"expected alias tensor version 1, found {version}")
        n, k, r, c = (self.integer() for _ in range(4))
        return n, k, r, c


def open_stream(path: str | Path) -> DlibStream:
    """A reader over the dlib network file at ``path``.

    Raises
    ------
    ModelError
        The file cannot be read.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ModelError(
            f"Could not read the dlib network {path}: {error.strerror}. Reinstall "
            "face_recognition_models (pip install --force-reinstall face_recognition_models)."
        ) from None
    return DlibStream(data, path)


def read_network(path: str | Path) -> DlibNetwork:
    """Read dlib's serialized face descriptor network from ``path``.

    Raises
    ------
    ModelError
        The file is missing, truncated, corrupt, or holds another kind of
        network; the message names the file and the byte offset.
    """
    stream = open_stream(path)
    if stream.integer() != 1:
        raise stream.fail("expected the loss layer's version 1")
    loss = stream.string()
    if loss != "loss_metric_2":
        raise stream.fail(f"expected a 'loss_metric_2' layer, found {loss!r}")
    stream.real(), stream.real()  # margin and distance threshold: training only
    versions = []
    while True:
        version = stream.integer()
        versions.append(version)
        if version == 3:  # the layer that sits on the input comes last
            break
        if version not in (1, 2) or len(versions) > 10_000:
            raise stream.fail(f"unexpected layer version {version}")
    network_input = _read_input(stream)
    forward = list(reversed(versions))
    layers: list[Layer] = []
    index = 0
    while index < len(forward):
        if forward[index] == 1:
            wrappers = 1
            while index + wrappers < len(forward) and forward[index + wrappers] == 1:
                wrappers += 1
            if wrappers == 1:
                layers.append(Tag(1))
            elif wrappers == 2:
                layers.extend((Tag(2), Skip(1)))
            else:
                raise stream.fail(f"{wrappers} tag/skip wrappers in a row, which no known "
                                  "dlib ResNet template produces")
            index += wrappers
            continue
        layers.append(_read_layer(stream, layers))
        skip_training_state(stream)
        if forward[index] == 3:
            stream.integer()  # sample expansion factor of the input layer
        index += 1
    stream.expect_end()
    return DlibNetwork(network_input, tuple(layers), loss)


def _read_input(stream: DlibStream) -> InputRGB:
    name = stream.string()
    if name != "input_rgb_image_sized":
        raise stream.fail(f"expected an 'input_rgb_image_sized' layer, found {name!r}")
    mean = (stream.real(), stream.real(), stream.real())
    rows, cols = stream.integer(), stream.integer()
    return InputRGB(mean, (rows, cols))


def skip_training_state(stream: DlibStream) -> None:
    """Skip what dlib writes after each layer's details: three flags and three empty tensors."""
    for _ in range(3):  # setup called, gradient stale, output/gradient disabled
        stream.boolean()
    for _ in range(3):  # x_grad, cached_output, params_grad: empty in a saved model
        stream.tensor()


def _read_layer(stream: DlibStream, below: list[Layer]) -> Layer:
    name = stream.string()
    if name == "con_4":
        return read_conv(stream)
    if name == "affine_":
        params = stream.tensor().ravel()
        gamma, beta = stream.alias(), stream.alias()
        stream.integer()  # mode: per channel or per element; gamma's shape says which
        size = int(np.prod(gamma))
        if params.size != 2 * size or int(np.prod(beta)) != size:
            raise stream.fail(f"affine parameters of size {params.size} do not fit {gamma}")
        return Affine(params[:size].copy(), params[size:].copy())
    if name == "relu_":
        return Relu()
    if name in ("max_pool_2", "avg_pool_2"):
        rows, cols, stride_y, stride_x, pad_y, pad_x = (stream.integer() for _ in range(6))
        return Pool(name[:3], (rows, cols), (stride_y, stride_x), (pad_y, pad_x))
    if name == "add_prev_":
        # add_prev2 closes residual_down (after its skip), add_prev1 closes residual.
        return AddPrev(2 if any(isinstance(layer, Skip) for layer in below[-3:]) else 1)
    if name == "fc_2":
        return _read_fc(stream)
    raise stream.fail(f"unsupported layer {name!r}")


def read_conv(stream: DlibStream) -> Conv:
    """Read the details of a ``con_4`` layer (its name already read)."""
    params = stream.tensor().ravel()
    filters, rows, cols = stream.integer(), stream.integer(), stream.integer()
    stride = (stream.integer(), stream.integer())
    padding = (stream.integer(), stream.integer())
    shape = stream.alias()
    bias_shape = stream.alias()
    for _ in range(4):  # learning rate and weight decay multipliers
        stream.real()
    weight_count = int(np.prod(shape))
    if shape[0] != filters or shape[2:] != (rows, cols) or int(np.prod(bias_shape)) != filters:
        raise stream.fail(f"convolution shapes {shape} and {bias_shape} disagree")
    if params.size != weight_count + filters:
        raise stream.fail(f"convolution with {params.size} parameters, expected "
                          f"{weight_count + filters}")
    weights = params[:weight_count].reshape(shape).copy()
    return Conv(weights, params[weight_count:].copy(), stride, padding)


def _read_fc(stream: DlibStream) -> FullyConnected:
    outputs, inputs = stream.integer(), stream.integer()
    params = stream.tensor().ravel()
    stream.alias(), stream.alias()  # weights and bias views
    has_bias = stream.integer() == 0  # dlib's FC_HAS_BIAS is 0, FC_NO_BIAS is 1
    for _ in range(4):
        stream.real()
    expected = (inputs + int(has_bias)) * outputs
    if params.size != expected:
        raise stream.fail(f"fully connected layer with {params.size} parameters, "
                          f"expected {expected}")
    weights = params[: inputs * outputs].reshape(inputs, outputs).copy()
    bias = params[inputs * outputs :].copy() if has_bias else None
    return FullyConnected(weights, bias)
