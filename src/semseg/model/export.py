"""The ONNX export of a trained model: ``model/model.onnx``, written once at the end of training.

The export is what a CPU endpoint runs with ONNX Runtime, and what a user takes to any ONNX
runtime: one float32 input ``image`` of shape (N, 3, S, S), normalised with the ImageNet mean and
standard deviation, and one output ``probabilities`` (N, C, S, S), the softmax of the main head
(the aux head is left out). ``S`` is fixed at export time (``size.inference_size``); the predictor maps any
image size onto it. The model's metadata says S, C, the normalisation and the algorithm.

Why it is post-processed after ``mx.onnx.export_model``:
- MXNet 1.9.1 translates operators with its opset-13 rules but stamps the file with the installed
  onnx's newest opset; the file is stamped 13, which is what its operators are.
- Weights must be initializers only, never also graph inputs: ONNX Runtime treats an initializer
  that is also an input as overridable, and then cannot fold batch norms into convolutions.
PSPNet's and Fast-SCNN's pyramids use adaptive average pooling with output sizes 2, 3 and 6, which
``mx.onnx`` does not translate; at a fixed export size it is an exact fixed pooling (see
``_fixed_pool``), so the exported copy of the network pools that way.
"""

from __future__ import annotations

import logging
import tempfile
import types
from pathlib import Path

import mxnet as mx
import numpy as np

from ..data.transforms import MEAN, STD
from ..files import write_atomically
from . import fastscnn
from .artifacts import weights_file
from .factory import build_network
from .size import inference_size

log = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"
OPSET = 13  # the newest opset mxnet 1.9.1 has translation rules for
IR_VERSION = 7  # the IR version of opset 13, so runtimes that read opset 13 read the file


def _pooling_bins(length: int, bins: int) -> list[tuple[int, int]]:
    """MXNet's adaptive pooling windows: bin i spans [floor(i*n/o), ceil((i+1)*n/o))."""
    return [(i * length // bins, -(-(i + 1) * length // bins)) for i in range(bins)]


def _fixed_pool(self, F, x, size: int):
    """Adaptive average pooling to ``size`` x ``size``, for the feature size fixed at export.

    Where the size divides the feature map it is one plain average pooling. Otherwise the windows
    differ in size (and overlap, exactly as in adaptive pooling): rows are averaged window by window
    into ``size`` rows, then columns likewise, each window a slice and an average pooling over it.
    (``mean`` is avoided: mx.onnx writes ReduceMean in a form newer onnx checkers reject.)
    """
    height, width = self._up_kwargs["height"], self._up_kwargs["width"]
    if height % size == 0 and width % size == 0:
        kernel = (height // size, width // size)
        return F.Pooling(x, kernel=kernel, stride=kernel, pool_type="avg")
    rows = [
        F.Pooling(F.slice_axis(x, axis=2, begin=a, end=b), kernel=(b - a, 1), pool_type="avg")
        for a, b in _pooling_bins(height, size)
    ]
    x = F.concat(*rows, dim=2)
    columns = [
        F.Pooling(F.slice_axis(x, axis=3, begin=a, end=b), kernel=(1, b - a), pool_type="avg")
        for a, b in _pooling_bins(width, size)
    ]
    return F.concat(*columns, dim=3)


class Probabilities(mx.gluon.HybridBlock):
    """The network's main head, as softmax probabilities: what the export computes."""

    def __init__(self, net):
        super().__init__()
        with self.name_scope():
            self.net = net

    def hybrid_forward(self, F, x):
        return F.softmax(self.net(x)[0], axis=1)


def export_network(hp: dict, params_path: Path, size: int) -> mx.gluon.HybridBlock:
    """A copy of the trained network without aux head, shaped for ``size``, pooling in fixed windows."""
    net = build_network(hp["algorithm"], hp["backbone"], hp["num_classes"], size, hp["base_size"], aux=False)
    net.load_parameters(str(params_path), ctx=mx.cpu(), ignore_extra=True)
    pyramid = {"psp": lambda: net.head.psp, "fastscnn": lambda: fastscnn.pyramid_pooling(net)}.get(hp["algorithm"])
    if pyramid is not None:
        pyramid().pool = types.MethodType(_fixed_pool, pyramid())
    return Probabilities(net)


def _set_shape(value, dims: tuple) -> None:
    """Declare ``value``'s shape: ints are fixed, strings are named free dimensions."""
    shape = value.type.tensor_type.shape
    del shape.dim[:]
    for size in dims:
        dim = shape.dim.add()
        if isinstance(size, str):
            dim.dim_param = size
        else:
            dim.dim_value = size


def _channel_softmax(graph) -> None:
    """Replace the class softmax by max, subtract, exp, sum and divide: the same function, 4x faster.

    ONNX Runtime computes a Softmax over axis 1 of an NCHW tensor by transposing it twice, which at
    480x480 costs a tenth of the whole forward pass; the reductions run in place.
    """
    from onnx import TensorProto, helper, numpy_helper

    def over_classes(node) -> bool:
        axis = [helper.get_attribute_value(a) for a in node.attribute if a.name == "axis"]
        return node.op_type == "Softmax" and axis == [1]

    index = next((i for i, node in enumerate(graph.node) if over_classes(node)), None)
    if index is None:
        return
    node = graph.node[index]
    x, y, stem = node.input[0], node.output[0], "class_softmax"
    for previous in graph.node:  # mx.onnx divides by the softmax temperature first, here 1
        if previous.output[0] == x and previous.op_type == "Div":
            divisor = [init for init in graph.initializer if init.name == previous.input[1]]
            if divisor and np.all(numpy_helper.to_array(divisor[0]) == 1):
                x = previous.input[0]
                graph.node.remove(previous)
                index -= 1
            break
    graph.initializer.append(helper.make_tensor(f"{stem}_axes", TensorProto.INT64, [1], [1]))
    replacement = [
        helper.make_node("ReduceMax", [x], [f"{stem}_max"], axes=[1], keepdims=1),
        helper.make_node("Sub", [x, f"{stem}_max"], [f"{stem}_shifted"]),
        helper.make_node("Exp", [f"{stem}_shifted"], [f"{stem}_exp"]),
        helper.make_node("ReduceSum", [f"{stem}_exp", f"{stem}_axes"], [f"{stem}_sum"], keepdims=1),
        helper.make_node("Div", [f"{stem}_exp", f"{stem}_sum"], [y]),
    ]
    del graph.node[index]
    for offset, new in enumerate(replacement):
        graph.node.insert(index + offset, new)


def _finish(model, output_shape: tuple[int, int, int], metadata: dict[str, str], graph_name: str):
    """Opset, initializer-only weights, names, declared shapes and metadata on mx.onnx's output."""
    import onnx

    graph = model.graph
    _channel_softmax(graph)
    used = {value for node in graph.node for value in node.input}
    kept = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    weights = {init.name for init in kept}
    inputs = [value for value in graph.input if value.name not in weights and value.name in used]
    del graph.input[:]
    graph.input.extend(inputs)
    renames = {inputs[0].name: INPUT_NAME, graph.output[0].name: OUTPUT_NAME}
    for value in list(graph.input) + list(graph.output):
        value.name = renames.get(value.name, value.name)
    for node in graph.node:
        node.input[:] = [renames.get(value, value) for value in node.input]
        node.output[:] = [renames.get(value, value) for value in node.output]
    _set_shape(graph.input[0], ("batch", 3) + output_shape[1:])
    _set_shape(graph.output[0], ("batch",) + output_shape)
    graph.name = graph_name
    del model.opset_import[:]
    model.opset_import.append(onnx.helper.make_opsetid("", OPSET))
    model.ir_version = IR_VERSION
    model.producer_name = "semseg"
    onnx.helper.set_model_props(model, metadata)
    onnx.checker.check_model(model)
    return model


def export_block(
    block: mx.gluon.HybridBlock,
    height: int,
    width: int,
    destination: Path,
    metadata: dict[str, str],
    graph_name: str = "semseg",
) -> Path:
    """Write ``block`` (image batch -> probabilities, fixed height x width) as ONNX to ``destination``.

    The batch dimension stays free. Raises whatever MXNet or onnx raise when a part does not convert.
    """
    import onnx
    from mxnet import onnx as mx_onnx

    block.hybridize(static_alloc=True, static_shape=True)
    output_shape = block(mx.nd.zeros((1, 3, height, width))).shape[1:]
    with tempfile.TemporaryDirectory() as scratch:
        prefix = str(Path(scratch) / "net")
        block.export(prefix)
        raw = str(Path(scratch) / "raw.onnx")
        mx_onnx.export_model(
            f"{prefix}-symbol.json",
            f"{prefix}-0000.params",
            [(1, 3, height, width)],
            [np.float32],
            raw,
            dynamic=True,
            dynamic_input_shapes=[(None, 3, height, width)],
        )
        model = _finish(onnx.load(raw), output_shape, metadata, graph_name)
    write_atomically(destination, lambda tmp: onnx.save(model, tmp))
    return destination


def model_metadata(hp: dict, size: int) -> dict[str, str]:
    """What a user of the file needs to feed it, stored in the file itself."""
    classes = hp["num_classes"]
    return {
        "input_size": str(size),
        "num_classes": str(classes),
        "algorithm": hp["algorithm"],
        "backbone": hp["backbone"],
        "mean": ",".join(f"{v:g}" for v in MEAN),
        "std": ",".join(f"{v:g}" for v in STD),
        "input": f"{INPUT_NAME}: float32 (N, 3, {size}, {size}), RGB scaled to [0, 1], minus mean, over std",
        "output": f"{OUTPUT_NAME}: float32 (N, {classes}, {size}, {size}), softmax over the classes",
    }


def export_onnx_file(hp: dict, params_path: Path, destination: Path, size: int | None = None) -> Path:
    """Write the ONNX export of the weights in ``params_path`` to ``destination``; raises on failure."""
    size = size or inference_size(hp)
    block = export_network(hp, params_path, size)
    return export_block(
        block,
        size,
        size,
        destination,
        model_metadata(hp, size),
        graph_name=f"semseg_{hp['algorithm']}_{hp['backbone']}",
    )


def export_onnx(hp: dict, model_dir: Path) -> Path | None:
    """Export the best weights of ``model_dir`` to ``model_dir/model.onnx``, at the end of training.

    Fails soft: the three built-in files are the model; the export only speeds up CPU serving, so a
    failure is logged as a warning and the endpoint serves through MXNet instead.
    """
    destination = Path(model_dir) / ONNX_FILE
    size = inference_size(hp)
    try:
        export_onnx_file(hp, weights_file(Path(model_dir)), destination, size)
    except Exception as exc:  # noqa: BLE001 - any failure here must leave training successful
        destination.unlink(missing_ok=True)  # never serve an export of other weights
        log.warning(
            "The ONNX export was not written (%s: %s); the model serves through MXNet",
            type(exc).__name__,
            str(exc).strip().splitlines()[0][:300] if str(exc).strip() else "",
        )
        return None
    log.info("Wrote the ONNX export %s (input %dx%d, %d classes)", destination, size, size, hp["num_classes"])
    return destination
