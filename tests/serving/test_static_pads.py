"""Pad amounts computed from shapes become constants when the image size is fixed (`static_pads`)."""

from __future__ import annotations

import numpy as np
from server_models import same_padded_onnx


def _logits(path_or_model, batch):
    import onnxruntime as ort

    source = path_or_model if isinstance(path_or_model, str) else path_or_model.SerializeToString()
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    return session.run(None, {"image": batch})[0]


def test_a_fixed_size_model_loses_its_pad_arithmetic_and_keeps_its_outputs(tmp_path):
    import onnx

    from emorec.serving.static_pads import fold_static_pads

    path = str(same_padded_onnx(tmp_path / "same.onnx", dynamic_size=False))
    model = onnx.load(path)
    assert {"Shape", "Ceil"} <= {n.op_type for n in model.graph.node}
    assert fold_static_pads(model) == 2  # one per stride-2 convolution
    onnx.checker.check_model(model)
    kinds = {n.op_type for n in model.graph.node}
    assert "Shape" not in kinds and "Ceil" not in kinds and "Pad" in kinds
    initializers = {i.name for i in model.graph.initializer}
    assert all(n.input[1] in initializers for n in model.graph.node if n.op_type == "Pad")
    for size in (1, 3):  # the batch axis stays dynamic
        batch = np.random.default_rng(size).normal(0, 1, (size, 3, 33, 33)).astype(np.float32)
        np.testing.assert_allclose(_logits(model, batch), _logits(path, batch), rtol=0, atol=1e-6)


def test_a_model_whose_image_size_varies_is_left_as_it_is(tmp_path):
    import onnx

    from emorec.serving.static_pads import fold_static_pads

    model = onnx.load(str(same_padded_onnx(tmp_path / "same.onnx", dynamic_size=True)))
    before = model.SerializeToString()
    assert fold_static_pads(model) == 0
    assert model.SerializeToString() == before


def test_a_pad_that_depends_on_the_batch_is_never_frozen(tmp_path):
    """A Pad whose amount grows with the batch size evaluates differently at batch 1 and 2: kept."""
    import onnx
    from onnx import TensorProto, helper

    from emorec.serving.static_pads import fold_static_pads

    nodes = [helper.make_node("Shape", ["image"], ["shape"], start=0, end=1),  # (batch,)
             helper.make_node("Concat", ["zeros6", "shape", "zero1"], ["pads"], axis=0),  # pad W's end by batch
             helper.make_node("Pad", ["image", "pads"], ["logits"], mode="constant")]
    graph = helper.make_graph(
        nodes, "batch_pad", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, 2, 2])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)],
        [helper.make_tensor("zeros6", TensorProto.INT64, [6], [0] * 6), helper.make_tensor("zero1", TensorProto.INT64, [1], [0])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert fold_static_pads(model) == 0
    assert [n.op_type for n in model.graph.node] == ["Shape", "Concat", "Pad"]
