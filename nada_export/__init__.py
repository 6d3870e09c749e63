"""From an adapted generator to a Triton deployment: ONNX graphs, TensorRT engines, the model
repository, the server launcher and gRPC clients."""
