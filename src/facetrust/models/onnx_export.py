"""Build an ONNX graph equivalent to a dlib network read by :mod:`.dlib_format`.

The graph takes aligned chips as dlib does, uint8 of shape (n, rows, cols, 3)
RGB, and returns descriptors of shape (n, 128) float32; the batch dimension is
free. What dlib does that ONNX spells differently:

- the input layer's ``(pixel - mean) / 256`` on RGB planes becomes Cast,
  Transpose, Sub and Mul nodes at the start of the graph;
- each ``affine`` that follows a convolution is folded into the
  convolution's weights and bias (``gamma * (w x + b) + beta``), which changes
  results by float rounding only;
- ``add_prev`` adds tensors of different shapes by treating missing elements
  as zero (dlib's ResNet adds a 3x3 block output to a 4x4 pooled shortcut, and
  128 channels to 64): the smaller one is zero-padded at the end of each axis;
- pooling with a (0, 0) window is a global average pool.

Needs the ``onnx`` package (``pip install onnx``), imported only
when a graph is built.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ModelError
from .dlib_format import (
    AddPrev,
    Affine,
    Conv,
    DlibNetwork,
    FullyConnected,
    Pool,
    Relu,
    Skip,
    Tag,
)

#: ONNX opset the graph is written for (supported by onnxruntime >= 1.16).
OPSET = 17
INPUT_NAME = "chips"
OUTPUT_NAME = "descriptors"


@dataclass(frozen=True)
class _Value:
    name: str
    shape: tuple[int, int, int]  # channels, rows, cols


class _GraphBuilder:
    def __init__(self, onnx: Any) -> None:
        self.onnx = onnx
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self.count = 0

    def fresh(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}_{self.count}"

    def constant(self, prefix: str, array: np.ndarray[Any, Any]) -> str:
        name = self.fresh(prefix)
        self.initializers.append(self.onnx.numpy_helper.from_array(array, name))
        return name

    def node(self, op: str, inputs: list[str], output: str | None = None, **attrs: Any) -> str:
        output = output or self.fresh(op.lower())
        self.nodes.append(self.onnx.helper.make_node(op, inputs, [output], **attrs))
        return output


def _pooled(size: int, window: int, stride: int, pad: int) -> int:
    return 1 + (size + 2 * pad - window) // stride


def build_onnx_model(network: DlibNetwork) -> Any:
    """An ``onnx.ModelProto`` computing the same descriptors as ``network``.

    The model's input ``chips`` is uint8 (n, rows, cols, 3) RGB and its output
    ``descriptors`` is float32 (n, outputs), not normalised (as dlib's).

    Raises
    ------
    ModelError
        The ``onnx`` package is missing, or the network holds a layer order
        this exporter does not handle (an affine not after a convolution, an
        ``add_prev`` of an unknown tag).
    """
    try:
        import onnx
    except ImportError:
        raise ModelError(
            "Converting the dlib network needs the onnx package. Install it with: "
            "pip install onnx"
        ) from None
    graph = _GraphBuilder(onnx)
    rows, cols = network.input.size
    mean = np.asarray(network.input.mean, dtype=np.float32).reshape(1, 3, 1, 1)
    x = graph.node("Cast", [INPUT_NAME], to=onnx.TensorProto.FLOAT)
    x = graph.node("Transpose", [x], perm=[0, 3, 1, 2])
    x = graph.node("Sub", [x, graph.constant("mean", mean)])
    x = graph.node("Mul", [x, graph.constant("scale", np.full((), 1 / 256, np.float32))])
    value = _Value(x, (3, rows, cols))
    tags: dict[int, _Value] = {}
    layers = list(network.layers)
    index = 0
    while index < len(layers):
        layer = layers[index]
        if isinstance(layer, Conv):
            follower = layers[index + 1] if index + 1 < len(layers) else None
            affine = follower if isinstance(follower, Affine) else None
            value = _conv(graph, value, layer, affine)
            index += 2 if affine is not None else 1
            continue
        if isinstance(layer, Affine):
            raise ModelError("The dlib network has an affine layer that does not follow a "
                             "convolution; this exporter only handles folded batch norm.")
        if isinstance(layer, Relu):
            value = _Value(graph.node("Relu", [value.name]), value.shape)
        elif isinstance(layer, Pool):
            value = _pool(graph, value, layer)
        elif isinstance(layer, Tag):
            tags[layer.tag] = value
        elif isinstance(layer, Skip):
            value = tags[layer.tag]
        elif isinstance(layer, AddPrev):
            if layer.tag not in tags:
                raise ModelError(f"The dlib network adds tag{layer.tag} before defining it.")
            value = _add(graph, value, tags[layer.tag])
        elif isinstance(layer, FullyConnected):
            value = _fully_connected(graph, value, layer)
        index += 1
    graph.node("Identity", [value.name], OUTPUT_NAME)
    descriptor_size = value.shape[0]
    model_graph = onnx.helper.make_graph(
        graph.nodes,
        "dlib_face_recognition_resnet_model_v1",
        [onnx.helper.make_tensor_value_info(
            INPUT_NAME, onnx.TensorProto.UINT8, ["n", rows, cols, 3])],
        [onnx.helper.make_tensor_value_info(
            OUTPUT_NAME, onnx.TensorProto.FLOAT, ["n", descriptor_size])],
        graph.initializers,
    )
    model = onnx.helper.make_model(
        model_graph,
        opset_imports=[onnx.helper.make_opsetid("", OPSET)],
        producer_name="facetrust",
    )
    model.ir_version = 8  # readable by every onnxruntime that supports opset 17
    onnx.checker.check_model(model)
    return model


def _conv(graph: _GraphBuilder, value: _Value, conv: Conv, affine: Affine | None) -> _Value:
    weights = conv.weights.astype(np.float64)
    bias = conv.bias.astype(np.float64)
    if affine is not None:
        gamma = affine.gamma.astype(np.float64)
        weights = weights * gamma.reshape(-1, 1, 1, 1)
        bias = bias * gamma + affine.beta.astype(np.float64)
    filters, _, rows, cols = weights.shape
    (stride_y, stride_x), (pad_y, pad_x) = conv.stride, conv.padding
    output = graph.node(
        "Conv",
        [
            value.name,
            graph.constant("w", weights.astype(np.float32)),
            graph.constant("b", bias.astype(np.float32)),
        ],
        kernel_shape=[rows, cols],
        strides=[stride_y, stride_x],
        pads=[pad_y, pad_x, pad_y, pad_x],
    )
    _, height, width = value.shape
    shape = (
        filters,
        _pooled(height, rows, stride_y, pad_y),
        _pooled(width, cols, stride_x, pad_x),
    )
    return _Value(output, shape)


def _pool(graph: _GraphBuilder, value: _Value, pool: Pool) -> _Value:
    channels, height, width = value.shape
    if pool.window == (0, 0):
        if pool.kind != "avg":
            raise ModelError("The dlib network has a global max pool, which is not supported.")
        return _Value(graph.node("GlobalAveragePool", [value.name]), (channels, 1, 1))
    (rows, cols), (stride_y, stride_x), (pad_y, pad_x) = pool.window, pool.stride, pool.padding
    if pool.kind == "avg" and (pad_y or pad_x):
        # dlib averages over the window inside the image only.
        attrs: dict[str, Any] = {"count_include_pad": 0}
    else:
        attrs = {}
    output = graph.node(
        "MaxPool" if pool.kind == "max" else "AveragePool",
        [value.name],
        kernel_shape=[rows, cols],
        strides=[stride_y, stride_x],
        pads=[pad_y, pad_x, pad_y, pad_x],
        **attrs,
    )
    shape = (
        channels,
        _pooled(height, rows, stride_y, pad_y),
        _pooled(width, cols, stride_x, pad_x),
    )
    return _Value(output, shape)


def _pad_to(graph: _GraphBuilder, value: _Value, shape: tuple[int, int, int]) -> str:
    if value.shape == shape:
        return value.name
    extra = [target - have for target, have in zip(shape, value.shape, strict=True)]
    pads = np.asarray([0, 0, 0, 0, 0, *extra], dtype=np.int64)
    return graph.node("Pad", [value.name, graph.constant("pads", pads)])


def _add(graph: _GraphBuilder, first: _Value, second: _Value) -> _Value:
    shape = tuple(max(a, b) for a, b in zip(first.shape, second.shape, strict=True))
    target = (shape[0], shape[1], shape[2])
    output = graph.node("Add", [_pad_to(graph, first, target), _pad_to(graph, second, target)])
    return _Value(output, target)


def _fully_connected(graph: _GraphBuilder, value: _Value, fc: FullyConnected) -> _Value:
    inputs, outputs = fc.weights.shape
    if int(np.prod(value.shape)) != inputs:
        raise ModelError(f"The dlib network's fully connected layer expects {inputs} inputs "
                         f"but receives {value.shape}.")
    flat = graph.node("Flatten", [value.name], axis=1)
    output = graph.node("MatMul", [flat, graph.constant("fc", fc.weights)])
    if fc.bias is not None:
        output = graph.node("Add", [output, graph.constant("fc_bias", fc.bias)])
    return _Value(output, (outputs, 1, 1))
