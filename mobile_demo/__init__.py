"""edgeport's device side: run exported models with numpy, Pillow and one runtime.

Usage::

    from edgeport.mobile_demo import load_model, load_image, preprocess_digit
    model = load_model("RUN/export/model_int8.tflite")      # LiteRT, no TensorFlow
    x = preprocess_digit(load_image("seven.jpg"))[None]      # [1, 28, 28] in [0, 1]
    model.predict(x)["probabilities"].argmax()

Never imports TensorFlow (unless it is the only TFLite runtime installed) nor
``edgeport.train`` / ``edgeport.export``; only ``edgeport-demo --export-samples`` reads the
MNIST files, through the TensorFlow-free ``edgeport.train.data``.
"""

from edgeport.errors import EdgeportError

from .preprocess import load_image, prepare_input, preprocess_digit
from .runtime import Model, TensorSpec, available_runtimes, load_model

__all__ = [
    "EdgeportError",
    "Model",
    "TensorSpec",
    "available_runtimes",
    "load_image",
    "load_model",
    "prepare_input",
    "preprocess_digit",
]
