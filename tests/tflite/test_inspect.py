"""inspect(): ops with versions, dtypes, quantization and the size breakdown."""

from __future__ import annotations

import json

import numpy as np
import pytest

import tfcompress as tfc


@pytest.fixture(scope="session")
def int8_report(trained_digits_cnn, digits):
    return tfc.inspect(tfc.convert(trained_digits_cnn, "int8", digits.x_train[:50]))


def test_size_breakdown_adds_up_to_the_file_size(int8_report):
    assert int8_report.weights_bytes > 0 and int8_report.graph_bytes > 0
    assert int8_report.weights_bytes + int8_report.graph_bytes == int8_report.size_bytes


def test_ops_have_names_versions_and_dtypes(int8_report):
    conv = [op for op in int8_report.ops if op.name == "CONV_2D"]
    assert len(conv) == 3
    assert all(op.version >= 1 for op in int8_report.ops)
    assert conv[0].input_dtypes[:2] == ["INT8", "INT8"] and conv[0].input_dtypes[2] == "INT32"


def test_conv_weights_are_per_channel_symmetric(int8_report):
    conv = next(op for op in int8_report.ops if op.name == "CONV_2D")
    weights = int8_report.tensors[conv.inputs[1]]
    assert weights.quantization.per_channel
    assert len(weights.quantization.scale) == weights.shape[0]
    assert set(weights.quantization.zero_point) == {0}
    assert weights.buffer is not None and weights.buffer.dtype == np.int8
    assert weights.buffer.min() >= -127  # narrow range


def test_float_model_lists_its_float_ops(trained_digits_cnn):
    report = tfc.inspect(tfc.convert(trained_digits_cnn, "float32"))
    assert set(report.float_ops) == {"CONV_2D", "MAX_POOL_2D", "MEAN", "FULLY_CONNECTED"}


def test_report_serializes_to_json_and_prints(int8_report, tmp_path):
    payload = json.loads(json.dumps(int8_report.to_dict()))
    assert payload["float_ops"] == [] and payload["op_counts"]["CONV_2D"] == 3
    text = int8_report.summary()
    assert "full integer" in text and "CONV_2D" in text


def test_inspect_reads_a_path_like_the_bytes(trained_digits_cnn, tmp_path):
    flatbuffer = tfc.convert(trained_digits_cnn, "float16")
    path = tfc.save_tflite(flatbuffer, tmp_path / "m.tflite")
    assert tfc.inspect(path).op_counts == tfc.inspect(flatbuffer).op_counts


def _repacked(model: object) -> bytes:
    """Serialize a flatbuffer object-API model (as a third-party tool would write it)."""
    import flatbuffers

    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


@pytest.fixture(scope="session")
def while_loop_file():
    """A float file with control flow: WHILE in subgraph 0, its cond and body in subgraphs 1, 2."""
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([1, 4], tf.float32)])
    def loop(x):
        def body(i, x):
            return i + 1, tf.nn.relu(x * 1.5 - 0.1)

        return tf.while_loop(lambda i, x: i < 3, body, [tf.constant(0), x])[1]

    converter = tf.lite.TFLiteConverter.from_concrete_functions([loop.get_concrete_function()])
    return converter.convert(), loop


def test_every_subgraph_of_a_control_flow_file_is_reported(while_loop_file):
    flatbuffer, loop = while_loop_file
    report = tfc.inspect(flatbuffer)
    assert report.subgraph_count == len(report.subgraphs) == 3
    assert [op.name for op in report.ops] == ["WHILE"]  # subgraph 0, the entry
    body = report.subgraphs[2]
    assert {"MUL", "SUB"} <= set(body.float_ops) and all(op.subgraph == 2 for op in body.ops)
    assert report.subgraphs[1].op_counts == {"LESS": 1}
    assert {"WHILE", "MUL", "SUB"} <= set(report.float_ops)  # every subgraph's float ops
    assert report.op_counts == {"WHILE": 1}  # subgraph 0
    assert sum(report.all_op_counts.values()) == sum(len(s.ops) for s in report.subgraphs)
    payload = json.loads(json.dumps(report.to_dict()))
    assert [s["index"] for s in payload["subgraphs"]] == [0, 1, 2]
    assert payload["subgraphs"][2]["op_counts"] == body.op_counts
    text = report.summary()
    assert all(f"subgraph {i} '{s.name}'" in text for i, s in enumerate(report.subgraphs))
    x = np.array([[0.5, -1.0, 2.0, 0.0]], np.float32)
    np.testing.assert_allclose(tfc.converter.run_tflite(flatbuffer, x), loop(x), rtol=1e-6)


def test_edgetpu_verdict_for_each_subgraph(while_loop_file):
    tpu = tfc.edgetpu_report(while_loop_file[0])
    verdicts = tpu.subgraph_verdicts()
    assert [v["subgraph"] for v in verdicts] == [0, 1, 2]
    assert not any(v["fully_mapped"] for v in verdicts)
    assert {op.subgraph for op in tpu.cpu_ops} == {0, 1, 2}
    assert "subgraphs" in tpu.model_problems[0] and "subgraph 2" in tpu.summary()


def test_a_buffer_shared_by_two_tensors_is_counted_once(tmp_path):
    import copy

    import keras

    from tfcompress.core import compat

    keras.utils.set_random_seed(0)
    inputs = keras.Input((16,))
    hidden = keras.layers.Dense(16, use_bias=False, name="a")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(16, use_bias=False, name="b")(hidden))
    model.get_layer("b").set_weights(model.get_layer("a").get_weights())
    flat = compat.tflite_schema().ModelT.InitFromPackedBuf(tfc.convert(model), 0)
    graph = flat.subgraphs[0]
    second = graph.operators[1]  # the converter made both ops read one tensor: give it a twin
    twin = copy.deepcopy(graph.tensors[second.inputs[1]])
    twin.name = b"b/kernel_twin"
    graph.tensors.append(twin)
    second.inputs = [second.inputs[0], len(graph.tensors) - 1, *second.inputs[2:]]
    flatbuffer = _repacked(flat)
    report = tfc.inspect(flatbuffer)
    kernels = [t for t in report.tensors if t.is_constant]
    assert len(kernels) == 2 and kernels[0].buffer_index == kernels[1].buffer_index
    assert report.weights_bytes == 16 * 16 * 4  # one buffer, not two
    x = np.random.default_rng(0).random((3, 16), np.float32)
    np.testing.assert_allclose(
        tfc.converter.run_tflite(flatbuffer, x), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6
    )


def test_sparse_tensors_are_reported_with_values_and_index_bytes():
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(64), keras.layers.Dense(10)])
    kernel = model.layers[0].kernel.numpy()
    kernel[np.abs(kernel) < np.quantile(np.abs(kernel), 0.8)] = 0.0
    model.layers[0].kernel.assign(kernel)
    flatbuffer = tfc.convert(model, "float32", sparsity=True)
    report = tfc.inspect(flatbuffer)
    (sparse_tensor,) = report.sparse_tensors
    encoding = sparse_tensor.sparse
    nonzero = int(np.count_nonzero(kernel))
    assert encoding.dense_shape == [64, 64] and encoding.stored_values == nonzero
    assert encoding.values_bytes == nonzero * 4 == sparse_tensor.nbytes
    assert encoding.sparsity == pytest.approx(1 - nonzero / kernel.size)
    assert 0 < encoding.index_bytes == report.sparse_index_bytes
    assert report.weights_bytes + report.sparse_index_bytes + report.graph_bytes == len(flatbuffer)
    assert "sparse tensor" in report.summary()
    assert report.to_dict()["sparse_tensors"][0]["index_bytes"] == encoding.index_bytes
    x = np.random.default_rng(0).random((4, 64), np.float32)
    np.testing.assert_allclose(
        tfc.converter.run_tflite(flatbuffer, x), model.predict(x, verbose=0), atol=1e-5
    )


@pytest.mark.parametrize("damage", ["subgraph output", "op input", "op code"])
def test_an_index_past_the_end_is_a_corrupted_file_not_an_index_error(damage, trained_digits_cnn):
    from tfcompress.converter import TFLiteFileError
    from tfcompress.core import compat
    from tfcompress.tflite.flatbuffer import pack

    model = compat.tflite_schema().ModelT.InitFromPackedBuf(
        tfc.convert(trained_digits_cnn, "float32"), 0
    )
    graph = model.subgraphs[0]
    if damage == "subgraph output":
        graph.outputs = [len(graph.tensors) + 5]
    elif damage == "op input":
        graph.operators[0].inputs = [len(graph.tensors)]
    else:
        graph.operators[0].opcodeIndex = len(model.operatorCodes)
    with pytest.raises(TFLiteFileError, match="points at a missing .*corrupted"):
        tfc.inspect(pack(model))
