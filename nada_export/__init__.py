"""From an adapted generator to a Triton model repository: ONNX graphs checked against PyTorch,
TensorRT engines, and the repository layout. Serving it is nada_serve's job."""
