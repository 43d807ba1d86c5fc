"""core.onnx_file.count_macs: the model's multiply-accumulates from shape inference."""

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from c2f_edge.core.onnx_file import count_macs


def test_macs_of_a_grouped_conv_and_a_matmul():
    w = numpy_helper.from_array(np.zeros((16, 4, 3, 3), np.float32), "w")  # 2 groups of 8 input channels
    m = numpy_helper.from_array(np.zeros((16, 10), np.float32), "m")
    g = helper.make_graph(
        [helper.make_node("Conv", ["input", "w"], ["c"], group=2, strides=[2, 2], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c"], ["r"]),  # not a MAC
         helper.make_node("GlobalAveragePool", ["r"], ["p"]), helper.make_node("Flatten", ["p"], ["f"]),
         helper.make_node("MatMul", ["f", "m"], ["logits"])],
        "t", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 8, 20, 20])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])], [w, m])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    assert count_macs(model) == 16 * 10 * 10 * (4 * 3 * 3) + 10 * 16
