#!/usr/bin/env python3
"""A real Keras model exported to ONNX by tf2onnx: the NHWC fixture for fine-tuning (issue 15).

usage: python tools/make_keras_fixture.py [--out tests/fixtures/onnx]

Needs TensorFlow and tf2onnx (not in the PyTorch kit): `python3 -m venv /tmp/tfenv &&
/tmp/tfenv/bin/pip install tensorflow-cpu tf2onnx` (TensorFlow 2.21, Keras 3.15, tf2onnx 1.17
made the committed files).

The model is a small relative of the Keras course's HappyModel (the Happy House smile data set
is 64x64 RGB): channels-last input [batch, 64, 64, 3] with x/255 scaling left to the caller,
Conv2D(8, 3, stride 2, same) -> BatchNormalization -> ReLU -> MaxPooling2D(2) -> Conv2D(16, 3,
same) -> BatchNormalization -> ReLU -> MaxPooling2D(2) -> Flatten (channels-last order, so
tf2onnx transposes back before its Reshape) -> Dense(2, softmax), Keras' own random
initialisation (seed 7), batch norm statistics drawn so that the folded form is not the
identity and the Dense bias non-zero (tf2onnx drops an all-zero bias). Writes keras_happy.onnx, keras_happy.input.npy (2 random images) and
keras_happy.output.npy (Keras' own predictions on them, the reference for the import).
"""
import argparse
import os

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402
import tf2onnx  # noqa: E402
import onnx  # noqa: E402


def build() -> tf.keras.Model:
    tf.keras.utils.set_random_seed(7)
    inp = tf.keras.Input((64, 64, 3), name="input")
    x = tf.keras.layers.Conv2D(8, 3, strides=2, padding="same", name="conv1")(inp)
    x = tf.keras.layers.BatchNormalization(name="bn1")(x)
    x = tf.keras.layers.ReLU(name="relu1")(x)
    x = tf.keras.layers.MaxPooling2D(2, name="pool1")(x)
    x = tf.keras.layers.Conv2D(16, 3, padding="same", name="conv2")(x)
    x = tf.keras.layers.BatchNormalization(name="bn2")(x)
    x = tf.keras.layers.ReLU(name="relu2")(x)
    x = tf.keras.layers.MaxPooling2D(2, name="pool2")(x)
    x = tf.keras.layers.Flatten(name="flatten")(x)
    out = tf.keras.layers.Dense(2, activation="softmax", name="dense")(x)
    model = tf.keras.Model(inp, out, name="happy_small")
    rng = np.random.default_rng(7)
    for name in ["bn1", "bn2"]:
        bn = model.get_layer(name)
        gamma, beta, mean, var = bn.get_weights()
        bn.set_weights([
            (1.0 + 0.2 * rng.standard_normal(gamma.shape)).astype(np.float32),
            (0.1 * rng.standard_normal(beta.shape)).astype(np.float32),
            (0.1 * rng.standard_normal(mean.shape)).astype(np.float32),
            (1.0 + 0.5 * rng.random(var.shape)).astype(np.float32),
        ])
    dense = model.get_layer("dense")
    kernel, bias = dense.get_weights()
    dense.set_weights([kernel, (0.1 * rng.standard_normal(bias.shape)).astype(np.float32)])
    return model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "onnx"))
    args = ap.parse_args()
    model = build()
    spec = (tf.TensorSpec((None, 64, 64, 3), tf.float32, name="input"),)
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=13)
    path = os.path.join(args.out, "keras_happy.onnx")
    onnx.save(proto, path)
    x = np.random.default_rng(8).random((2, 64, 64, 3), dtype=np.float32)
    y = model.predict(x, verbose=0).astype(np.float32)
    np.save(os.path.join(args.out, "keras_happy.input.npy"), x)
    np.save(os.path.join(args.out, "keras_happy.output.npy"), y)
    print(path, [n.op_type for n in proto.graph.node], y)


if __name__ == "__main__":
    main()
