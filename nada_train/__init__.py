"""nada: StyleGAN-NADA domain adaptation, trained here and shipped through ONNX, TensorRT and Triton."""

__version__ = "0.1.0"
