"""Fold the pad amounts an exported graph computes from shapes into constants, where they are fixed.

timm's tf_* backbones (EfficientNet-Lite among them) use TensorFlow's 'same' padding: every
stride-2 convolution pads by an amount computed from its input's height and width, and the ONNX
export writes that as graph arithmetic (Shape, Gather, Div, Ceil, Sub, Clip, ... into a Pad).
emorec exports with a fixed image size (only the batch axis is dynamic), so those amounts are the
same on every call. Computed at run time, they cost more than the arithmetic: ONNX Runtime cannot
fuse a Pad whose amounts are not constant into the Conv after it, so each such Pad runs on its own
and forces layout changes around it. On the faces model (tf_efficientnet_lite0 at 96 px, batch 16,
2 threads) the Pads and reorders were 26% of the fp32 run time; folded, the model ran 1.7x faster
(median of 5 processes) with identical logits (benchmarks/RESULTS.md, "INT8"). ONNX Runtime's own
constant folding leaves these amounts computed (the Shape it starts from reads a tensor whose batch
axis is dynamic), hence this module, with no new dependency.

Each amount is evaluated by ONNX Runtime at batch 1 and batch 2, and folded only when both agree
(so a pad that depends on the batch is never frozen); the nodes left without a consumer go.
"""

from __future__ import annotations

import numpy as np

_FOLDED_SUFFIX = "__static"


def _fixed_image_shape(graph) -> list[int] | None:
    """(C, H, W) of the graph's one input when all three are fixed numbers, else None."""
    if len(graph.input) != 1:
        return None
    dims = graph.input[0].type.tensor_type.shape.dim
    fixed = [d.dim_value for d in dims[1:]]
    return fixed if len(dims) == 4 and all(v > 0 for v in fixed) else None


def _computed_pads(graph) -> list[str]:
    """The pad-amount inputs of Pad nodes that some node computes (not initializers or graph inputs)."""
    produced = {output for node in graph.node for output in node.output}
    return list(dict.fromkeys(node.input[1] for node in graph.node
                              if node.op_type == "Pad" and len(node.input) > 1 and node.input[1] in produced))


def _evaluate(model, names: list[str], shape: list[int]) -> list[list[np.ndarray]]:
    """Values of `names` at batch 1 and batch 2 (zero images: pad amounts depend on shapes only)."""
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for name in names:
        probe.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.INT64, None))
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    return [session.run(names, {input_name: np.zeros([batch, *shape], np.float32)}) for batch in (1, 2)]


def _drop_unused(graph) -> None:
    """Remove the nodes and initializers nothing downstream of the graph's outputs reads."""
    needed = {output.name for output in graph.output}
    kept = []
    for node in reversed(list(graph.node)):
        if any(output in needed for output in node.output):
            kept.append(node)
            needed.update(name for name in node.input if name)
    del graph.node[:]
    graph.node.extend(reversed(kept))
    initializers = [init for init in graph.initializer if init.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(initializers)


def fold_static_pads(model) -> int:
    """Replace, in place, every Pad amount `model` computes from shapes by its value, when the input
    image size is fixed; returns how many Pads were folded (0: the model is left as it was)."""
    import onnx
    from onnx import numpy_helper

    graph = model.graph
    shape = _fixed_image_shape(graph)
    has_subgraphs = any(attr.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
                        for node in graph.node for attr in node.attribute)
    names = _computed_pads(graph) if shape and not has_subgraphs else []
    if not names:
        return 0
    at_one, at_two = _evaluate(model, names, shape)
    folded = {}
    for name, one, two in zip(names, at_one, at_two):
        if np.array_equal(one, two):
            folded[name] = name + _FOLDED_SUFFIX
            graph.initializer.append(numpy_helper.from_array(np.asarray(one, np.int64), folded[name]))
    rewired = 0
    for node in graph.node:
        if node.op_type == "Pad" and len(node.input) > 1 and node.input[1] in folded:
            node.input[1] = folded[node.input[1]]
            rewired += 1
    _drop_unused(graph)
    return rewired
