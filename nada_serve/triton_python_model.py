"""Triton python-backend model: runs one exported graph (ONNX through onnxruntime, or a TensorRT
engine, or an AOTInductor package) for every request in a dynamic batch at once. Copied into each
model version folder as model.py; needs only numpy, onnxruntime (and tensorrt/torch for engines)
where the server runs. On a GPU instance onnxruntime uses its TensorRT and CUDA providers where the
installed onnxruntime has them (onnxruntime-gpu: pip install 'nada[gpu]').

Parameters (config.pbtxt): runtime = onnxruntime | tensorrt | aoti, model_file, check_finite = 1|0,
threads (intra-op threads, 0 = default), device (aoti: cpu | cuda, what the package was built for),
domains (a multi-domain model: its domain names in index order, comma-separated; a request whose
`domain` is not one of their indices is refused alone, the rest of the batch is drawn).
"""

import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils


class _OnnxRuntime:
    def __init__(self, path, threads, want_gpu):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        # Idle worker threads would spin for a while after each run, taking the cores from the next
        # model of the ensemble (another process). Servers share cores: let them sleep.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(
            path, opts, providers=onnx_providers(ort.get_available_providers(), want_gpu)
        )

    def __call__(self, feed):
        return self.session.run(None, feed)[0]


def onnx_providers(available, want_gpu):
    """On a GPU instance: TensorRT, then CUDA, where onnxruntime has them; the CPU always last."""
    gpu = [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if want_gpu and p in available]
    return gpu + ["CPUExecutionProvider"]


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        folder = os.path.join(args["model_repository"], args["model_version"])
        path = os.path.join(folder, params["model_file"])
        want_gpu = args.get("model_instance_kind") == "GPU"
        threads = int(params.get("threads", "0"))
        self.input_names = [i["name"] for i in config["input"]]
        if params.get("runtime") == "tensorrt":
            from nada_export.tensorrt_engine import EngineRunner

            self.run = EngineRunner(path)
        elif params.get("runtime") == "aoti":
            # Loading a package compiles nothing: Inductor's probe of the CPU's vector instructions
            # (a test library built and loaded in ten subprocesses, 1.3 s of each model instance's
            # load here) only feeds a warning when the package was built for another CPU, and the
            # CPU's own flags give the same answer. Set before torch._inductor reads its config.
            os.environ.setdefault("TORCHINDUCTOR_VEC_ISA_OK", "1")
            import torch

            from nada_export.aoti_engine import AotiRunner

            if threads:
                torch.set_num_threads(threads)
            device = params.get("device", "cpu")
            if device == "cuda":
                device = f"cuda:{args.get('model_instance_device_id', '0')}"
            self.run = AotiRunner(path, device, self.input_names)
        else:
            self.run = _OnnxRuntime(path, threads, want_gpu)
        self.output_name = config["output"][0]["name"]
        self.check_finite = params.get("check_finite", "1") == "1"
        self.domains = [d for d in params.get("domains", "").split(",") if d]

    def wrong_domain(self, arrays):
        """Why a request's domain indices cannot be drawn here, or None."""
        if not self.domains or "domain" not in arrays:
            return None
        index = arrays["domain"]
        wrong = index[(index < 0) | (index >= len(self.domains))]
        if not wrong.size:
            return None
        names = ", ".join(f"{k} {n}" for k, n in enumerate(self.domains))
        return f"domain {int(wrong[0])} is not served by this model; its domains are {names}"

    def execute(self, requests):
        responses = [None] * len(requests)
        feeds, sizes, live = {n: [] for n in self.input_names}, [], []
        for i, request in enumerate(requests):
            arrays = {n: pb_utils.get_input_tensor_by_name(request, n).as_numpy() for n in self.input_names}
            bad = [n for n, a in arrays.items() if self.check_finite and not np.isfinite(a).all()]
            refusal = f"input '{bad[0]}' contains NaN or infinity" if bad else self.wrong_domain(arrays)
            if refusal:
                responses[i] = pb_utils.InferenceResponse(
                    output_tensors=[], error=pb_utils.TritonError(refusal)
                )
                continue
            for n, a in arrays.items():
                feeds[n].append(a)
            sizes.append(len(arrays[self.input_names[0]]))
            live.append(i)
        if live:
            try:
                out = self.run({n: np.concatenate(v) for n, v in feeds.items()})
            except Exception as exc:  # report to every caller of this batch, keep serving
                for i in live:
                    responses[i] = pb_utils.InferenceResponse(
                        output_tensors=[], error=pb_utils.TritonError(str(exc))
                    )
                return responses
            for i, chunk in zip(live, np.split(out, np.cumsum(sizes)[:-1])):
                responses[i] = pb_utils.InferenceResponse(
                    output_tensors=[pb_utils.Tensor(self.output_name, chunk)]
                )
        return responses
