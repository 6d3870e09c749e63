"""gRPC clients for served generators: z (by seed) and truncation in, uint8 RGB images out.

Many seeds are split into requests of at most the model's max_batch_size; the asyncio client keeps
several requests in flight so Triton's dynamic batcher can merge them.
"""

from __future__ import annotations

import asyncio

import numpy as np

from nada_train.errors import NadaError
from nada_train.seeds import z_batch


class ServedModel:
    """What a served model takes, read from the server (no local files needed)."""

    def __init__(self, config: dict):
        self.name = config["name"]
        self.max_batch = int(config.get("max_batch_size", 0)) or 1
        self.inputs = {i["name"]: [int(d) for d in i["dims"]] for i in config["input"]}
        self.output = config["output"][0]["name"]
        if "z" not in self.inputs and "ws" not in self.inputs:
            raise NadaError(f"model '{self.name}' takes neither z nor ws; is it a nada generator?")

    @property
    def z_dim(self) -> int:
        return self.inputs["z"][0]


def _requests(n: int, max_batch: int) -> list[slice]:
    return [slice(i, min(i + max_batch, n)) for i in range(0, n, max_batch)]


def _inputs(module, model: ServedModel, z: np.ndarray, truncation: float):
    t = np.full((len(z), 1), truncation, np.float32)
    a = module.InferInput("z", list(z.shape), "FP32")
    a.set_data_from_numpy(np.ascontiguousarray(z, np.float32))
    b = module.InferInput("truncation", list(t.shape), "FP32")
    b.set_data_from_numpy(t)
    return [a, b], [module.InferRequestedOutput(model.output)]


class GeneratorClient:
    def __init__(self, url: str, model: str, timeout: float = 60.0):
        import tritonclient.grpc as grpcclient

        self.grpc = grpcclient
        self.url, self.timeout = url, timeout
        self.client = grpcclient.InferenceServerClient(url)
        try:
            config = self.client.get_model_config(model, as_json=True)["config"]
        except Exception as exc:
            raise NadaError(f"--model {model} at {url}: {_message(exc)}") from None
        self.model = ServedModel(config)

    def generate(self, z: np.ndarray, truncation: float = 1.0) -> np.ndarray:
        out = []
        for part in _requests(len(z), self.model.max_batch):
            inputs, outputs = _inputs(self.grpc, self.model, z[part], truncation)
            try:
                result = self.client.infer(self.model.name, inputs, outputs=outputs, client_timeout=self.timeout)
            except Exception as exc:
                raise NadaError(f"{self.model.name}: {_message(exc)}") from None
            out.append(result.as_numpy(self.model.output))
        return np.concatenate(out)

    def generate_seeds(self, seeds: list[int], truncation: float = 1.0) -> np.ndarray:
        return self.generate(z_batch(seeds, self.model.z_dim), truncation)

    def synthesize(self, ws: np.ndarray) -> np.ndarray:
        """For NAME_synthesis models: W+ codes [N, n_latent, w_dim] -> images."""
        out = []
        for part in _requests(len(ws), self.model.max_batch):
            x = self.grpc.InferInput("ws", list(ws[part].shape), "FP32")
            x.set_data_from_numpy(np.ascontiguousarray(ws[part], np.float32))
            out.append(self.client.infer(self.model.name, [x], client_timeout=self.timeout).as_numpy(self.model.output))
        return np.concatenate(out)

    def close(self) -> None:
        self.client.close()


async def generate_seeds_async(url: str, model: str, seeds: list[int], truncation: float = 1.0,
                               batch: int | None = None, concurrency: int = 4) -> np.ndarray:
    """Seeds split into requests of `batch` (default: the model's max), `concurrency` in flight."""
    import tritonclient.grpc.aio as aioclient

    client = aioclient.InferenceServerClient(url)
    try:
        try:
            served = ServedModel((await client.get_model_config(model, as_json=True))["config"])
        except Exception as exc:
            raise NadaError(f"--model {model} at {url}: {_message(exc)}") from None
        z = z_batch(seeds, served.z_dim)
        parts = _requests(len(z), min(batch or served.max_batch, served.max_batch))
        gate = asyncio.Semaphore(concurrency)

        async def one(part: slice) -> np.ndarray:
            async with gate:
                inputs, outputs = _inputs(aioclient, served, z[part], truncation)
                result = await client.infer(served.name, inputs, outputs=outputs)
                return result.as_numpy(served.output)

        try:
            chunks = await asyncio.gather(*(one(p) for p in parts))
        except Exception as exc:
            if isinstance(exc, NadaError):
                raise
            raise NadaError(f"{model}: {_message(exc)}") from None
        return np.concatenate(chunks)
    finally:
        await client.close()


def wait_until_ready(url: str, model: str, timeout: float, poll: float = 0.25) -> None:
    """Return once `model` at `url` answers ready; NadaError after `timeout` seconds."""
    import time

    import tritonclient.grpc as grpcclient

    deadline, last = time.monotonic() + timeout, "no answer"
    client = grpcclient.InferenceServerClient(url)
    try:
        while True:
            try:
                if client.is_server_ready() and client.is_model_ready(model):
                    return
                last = f"model '{model}' not ready"
            except Exception as exc:  # server not up yet: connection refused
                last = _message(exc)
            if time.monotonic() >= deadline:
                raise NadaError(f"--wait {timeout:g}: {url} did not serve '{model}' in time ({last})")
            time.sleep(poll)
    finally:
        client.close()


def _message(exc: Exception) -> str:
    msg = getattr(exc, "message", None)
    msg = msg() if callable(msg) else msg
    return " ".join(str(msg or exc).split())[:300]
