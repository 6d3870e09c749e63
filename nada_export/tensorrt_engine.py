"""TensorRT engines from the exported ONNX graphs (TensorRT 8.6+/10 Python API).

TensorRT is imported only here and only when asked for; where it is missing, a clear NadaError
says so. Engine files are named by TensorRT version and GPU, because an engine runs only on the
TensorRT build and GPU model that made it.
"""

from __future__ import annotations

import re
from pathlib import Path

from nada_core.errors import FieldError, NadaError
from nada_core.fileio import atomic_path

# In fp16 engines these layer types stay fp32: the style affines (matmul), the demodulation
# (sum of squares, rsqrt) and powers. Convolutions - nearly all the work - run in fp16.
FP32_LAYER_TYPES = ("MATRIX_MULTIPLY", "REDUCE", "UNARY")
FP32_ELEMENTWISE_OPS = ("POW", "DIV")


def import_tensorrt():
    try:
        import tensorrt as trt  # noqa: PLC0415 (lazy on purpose)
    except ImportError as exc:
        raise FieldError(
            f"TensorRT is not installed ({exc}); install NVIDIA's tensorrt wheel on a machine with a GPU (pip "
            "install tensorrt from NVIDIA's index), or export with {engine} onnx"
        ) from None
    return trt


def tensorrt_missing_reason() -> str | None:
    """None when TensorRT and a CUDA GPU can be used, else why not (for skips and messages)."""
    try:
        import_tensorrt()
    except NadaError as exc:
        return str(exc)
    import torch

    if not torch.cuda.is_available():
        return "TensorRT is installed but no CUDA GPU is visible"
    return None


def engine_filename(stem: str, precision: str) -> str:
    trt = import_tensorrt()
    import torch

    gpu = re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(0).lower()).strip("-")
    return f"{stem}.{precision}.trt{trt.__version__}.{gpu}.plan"


def build_engine(
    onnx_path: Path,
    engine_path: Path,
    shapes: dict[str, tuple[int, ...]],
    max_batch: int,
    precision: str = "fp32",
    workspace_gib: float = 4.0,
) -> Path:
    """Build and write a serialized engine with one optimization profile over batch 1..max_batch.

    shapes: per input, its shape without the batch axis.
    """
    trt = import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    major = int(trt.__version__.split(".")[0])
    flags = 0 if major >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise NadaError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * 2**30))
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        keep_fp32_where_needed(trt, network)
    elif precision != "fp32":
        raise FieldError(f"{{precision}} {precision}: choose fp32 or fp16")
    profile = builder.create_optimization_profile()
    opt_batch = max(1, min(max_batch, 8))
    for name, shape in shapes.items():
        profile.set_shape(name, (1, *shape), (opt_batch, *shape), (max_batch, *shape))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise NadaError(f"TensorRT failed to build an engine from {onnx_path} (see the TensorRT log above)")
    with atomic_path(engine_path) as tmp:
        tmp.write_bytes(bytes(serialized))
    return engine_path


def keep_fp32_where_needed(trt, network) -> int:
    """Pin modulation/demodulation math to fp32 in an fp16 engine. Returns how many layers."""
    fp32_types = {getattr(trt.LayerType, t) for t in FP32_LAYER_TYPES if hasattr(trt.LayerType, t)}
    fp32_ops = {getattr(trt.ElementWiseOperation, o) for o in FP32_ELEMENTWISE_OPS}
    pinned = 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        elementwise = layer.type == trt.LayerType.ELEMENTWISE and layer.op in fp32_ops
        if layer.type in fp32_types or elementwise:
            layer.precision = trt.float32
            for j in range(layer.num_outputs):
                if layer.get_output(j).dtype in (trt.float32, trt.float16):
                    layer.set_output_type(j, trt.float32)
            pinned += 1
    return pinned


class EngineRunner:
    """Runs a serialized engine on the GPU with torch tensors as buffers (TensorRT 10 API)."""

    def __init__(self, engine_path: Path):
        import torch

        trt = import_tensorrt()
        self.trt, self.torch = trt, torch
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.engine = trt.Runtime(self.logger).deserialize_cuda_engine(Path(engine_path).read_bytes())
        if self.engine is None:
            raise NadaError(
                f"TensorRT could not load {engine_path}: built by another TensorRT version or GPU?"
            )
        self.context = self.engine.create_execution_context()
        self.names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in self.names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in self.names if n not in self.inputs]
        self.stream = torch.cuda.Stream()

    def __call__(self, feed: dict):
        import numpy as np

        torch, trt = self.torch, self.trt
        device_inputs = {}
        for name in self.inputs:
            t = torch.from_numpy(np.ascontiguousarray(feed[name])).cuda()
            device_inputs[name] = t
            self.context.set_input_shape(name, tuple(t.shape))
            self.context.set_tensor_address(name, t.data_ptr())
        outputs = {}
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            dtype = torch.from_numpy(np.zeros(1, dtype=trt.nptype(self.engine.get_tensor_dtype(name)))).dtype
            outputs[name] = torch.empty(shape, dtype=dtype, device="cuda")
            self.context.set_tensor_address(name, outputs[name].data_ptr())
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed")
        self.stream.synchronize()
        return outputs[self.outputs[0]].cpu().numpy()
