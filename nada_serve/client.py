"""gRPC clients for served generators: z (by seed) and truncation in, uint8 RGB images out; or
your own photos in (NAME_edit: an encoder, then the domain's synthesis), each in that domain out.

Many seeds are split into requests of at most the model's max_batch_size; the asyncio client keeps
several requests in flight so Triton's dynamic batcher can merge them. On the server's own host,
GeneratorClient(shared_memory=True) has the server write the images into a system shared-memory
region instead of the gRPC response (a 1024 px image is 3 MiB).
"""

from __future__ import annotations

import asyncio
import math
import os

import numpy as np

from nada_core.errors import FieldError, NadaError
from nada_core.pngs import encoder_photos
from nada_core.seeds import z_batch


class ServedModel:
    """What a served model takes, read from the server (no local files needed)."""

    def __init__(self, config: dict):
        self.name = config["name"]
        self.max_batch = int(config.get("max_batch_size", 0)) or 1
        self.inputs = {i["name"]: [int(d) for d in i["dims"]] for i in config["input"]}
        self.output = config["output"][0]["name"]
        self.output_dims = [int(d) for d in config["output"][0]["dims"]]
        if not {"z", "ws", "photo"} & set(self.inputs):
            raise NadaError(f"model '{self.name}' takes neither z, ws nor photo; is it a nada generator?")
        listed = config.get("parameters", {}).get("domains", {}).get("string_value", "")
        self.domains = [d for d in listed.split(",") if d]  # a multi-domain model's names, by index

    def domain_inputs(self, module, domain, n: int) -> list:
        """The `domain` input of n items (a name or index for all, or one per item) as a list of one, or
        no input for a model of one domain; names not served here refused in one line."""
        if "domain" not in self.inputs:
            if domain is not None:
                raise FieldError(
                    f"{{domain}} {domain}: model '{self.name}' draws one domain; ask a multi-domain model "
                    "(nada-export --domains)"
                )
            return []
        if domain is None:
            raise FieldError(
                f"{{domain}}: model '{self.name}' draws several domains; name one of {', '.join(self.domains)}"
            )
        items = [domain] * n if isinstance(domain, (str, int, np.integer)) else list(domain)
        if len(items) != n:
            raise FieldError(f"{{domain}}: {len(items)} domains for {n} images; give one, or one per image")
        index = np.empty((n, 1), np.int32)
        for k, d in enumerate(items):
            if isinstance(d, str) and not d.lstrip("-").isdigit():
                if d not in self.domains:
                    raise FieldError(
                        f"{{domain}} '{d}': model '{self.name}' serves {', '.join(self.domains)}; name one of them"
                    )
                index[k] = self.domains.index(d)
            else:
                index[k] = int(d)
        x = module.InferInput("domain", list(index.shape), "INT32")
        x.set_data_from_numpy(index)
        return [x]

    @property
    def z_dim(self) -> int:
        return self.inputs["z"][0]


def _requests(n: int, max_batch: int) -> list[slice]:
    return [slice(i, min(i + max_batch, n)) for i in range(0, n, max_batch)]


def _inputs(module, model: ServedModel, z: np.ndarray, truncation: float, domain=None):
    t = np.full((len(z), 1), truncation, np.float32)
    a = module.InferInput("z", list(z.shape), "FP32")
    a.set_data_from_numpy(np.ascontiguousarray(z, np.float32))
    b = module.InferInput("truncation", list(t.shape), "FP32")
    b.set_data_from_numpy(t)
    return [a, b] + model.domain_inputs(module, domain, len(z)), [module.InferRequestedOutput(model.output)]


def _part(domain, part: slice):
    """The domains of one request's items: one for all, or the slice of a per-item list."""
    return domain if domain is None or isinstance(domain, (str, int, np.integer)) else list(domain)[part]


class SharedImages:
    """A system shared-memory region, registered with the server, that it writes a response's images
    into (UINT8, up to max_batch of them). Same host only: the server maps the region by its key."""

    def __init__(self, client, model: ServedModel):
        import tritonclient.utils.shared_memory as shm

        self.shm, self.client = shm, client
        self.image_bytes = math.prod(model.output_dims)
        self.byte_size = model.max_batch * self.image_bytes
        self.name = f"nada-{os.getpid()}-{id(self):x}"
        self.handle = shm.create_shared_memory_region(self.name, "/" + self.name, self.byte_size)
        try:
            client.register_system_shared_memory(self.name, "/" + self.name, self.byte_size)
        except Exception as exc:
            shm.destroy_shared_memory_region(self.handle)
            raise FieldError(
                f"shared memory: the server could not map the region ({_message(exc)}); it works only on the "
                "server's own host; drop {shared_memory}"
            ) from None

    def requested(self, module, output: str, batch: int):
        out = module.InferRequestedOutput(output)
        out.set_shared_memory(self.name, batch * self.image_bytes)
        return out

    def read(self, result, output: str) -> np.ndarray:
        shape = [int(d) for d in result.get_output(output).shape]
        return self.shm.get_contents_as_numpy(self.handle, np.uint8, shape).copy()

    def close(self) -> None:
        try:
            self.client.unregister_system_shared_memory(self.name)
        finally:
            self.shm.destroy_shared_memory_region(self.handle)


class GeneratorClient:
    def __init__(self, url: str, model: str, timeout: float = 60.0, shared_memory: bool = False):
        import tritonclient.grpc as grpcclient

        self.grpc = grpcclient
        self.url, self.timeout = url, timeout
        self.client = grpcclient.InferenceServerClient(url)
        self.model = self._served(model)
        self.shared = SharedImages(self.client, self.model) if shared_memory else None
        self._editor: ServedModel | None = None

    def _served(self, model: str) -> ServedModel:
        try:
            config = self.client.get_model_config(model, as_json=True)["config"]
        except Exception as exc:
            raise FieldError(_not_served(model, self.url, exc)) from None
        return ServedModel(config)

    def _infer(self, inputs: list, outputs: list, batch: int, model: ServedModel | None = None) -> np.ndarray:
        model = model or self.model
        shared = self.shared if model is self.model else None
        if shared is not None:
            outputs = [shared.requested(self.grpc, model.output, batch)]
        try:
            result = self.client.infer(model.name, inputs, outputs=outputs, client_timeout=self.timeout)
        except Exception as exc:
            raise NadaError(f"{model.name}: {_message(exc)}") from None
        return shared.read(result, model.output) if shared is not None else result.as_numpy(model.output)

    def generate(self, z, truncation: float = 1.0, domain=None) -> np.ndarray:
        """Images of z [N, z_dim] (float), or of seeds (a list or range of ints, as generate_seeds).
        domain: for a multi-domain model, a domain's name or index for every image, or one per image."""
        z = np.asarray(z)
        if z.ndim == 1 and np.issubdtype(z.dtype, np.integer):
            z = z_batch([int(s) for s in z], self.model.z_dim)
        out = []
        for part in _requests(len(z), self.model.max_batch):
            inputs, outputs = _inputs(self.grpc, self.model, z[part], truncation, _part(domain, part))
            out.append(self._infer(inputs, outputs, len(z[part])))
        return np.concatenate(out)

    def generate_seeds(self, seeds: list[int], truncation: float = 1.0, domain=None) -> np.ndarray:
        return self.generate(z_batch(seeds, self.model.z_dim), truncation, domain)

    def synthesize(self, ws: np.ndarray, domain=None) -> np.ndarray:
        """For NAME_synthesis models: W+ codes [N, n_latent, w_dim] -> images (domain: as generate's)."""
        out = []
        for part in _requests(len(ws), self.model.max_batch):
            x = self.grpc.InferInput("ws", list(ws[part].shape), "FP32")
            x.set_data_from_numpy(np.ascontiguousarray(ws[part], np.float32))
            inputs = [x] + self.model.domain_inputs(self.grpc, _part(domain, part), len(ws[part]))
            out.append(
                self._infer(inputs, [self.grpc.InferRequestedOutput(self.model.output)], len(ws[part]))
            )
        return np.concatenate(out)

    def edit(self, images, domain=None) -> np.ndarray:
        """Your photos (uint8 [N, H, W, 3], or a list of [H, W, 3] of any sizes; faces aligned already,
        nada.align_face) in this generator's domain: uint8 [N, H, W, 3]. Each is resized to the
        encoder's input as nada-edit resizes it, then sent to NAME_edit (nada-export --encoder)."""
        editor = self._edit_model()
        photos = encoder_photos(images, editor.inputs["photo"][0])
        out = []
        for part in _requests(len(photos), editor.max_batch):
            x = self.grpc.InferInput("photo", list(photos[part].shape), "UINT8")
            x.set_data_from_numpy(np.ascontiguousarray(photos[part]))
            inputs = [x] + editor.domain_inputs(self.grpc, _part(domain, part), len(photos[part]))
            requested = [self.grpc.InferRequestedOutput(editor.output)]
            out.append(self._infer(inputs, requested, len(photos[part]), editor))
        return np.concatenate(out)

    def photo_side(self) -> int:
        """The side of the square photos this model's NAME_edit takes (its encoder's input)."""
        return self._edit_model().inputs["photo"][0]

    def _edit_model(self) -> ServedModel:
        """This model when it takes photos, else its NAME_edit (refused in one line when not served)."""
        if "photo" in self.model.inputs and self.model.output == "image":  # NAME_edit itself
            return self.model
        if self._editor is None:
            name = f"{self.model.name}_edit"
            try:
                config = self.client.get_model_config(name, as_json=True)["config"]
            except Exception:
                raise FieldError(
                    f"{{model}} {self.model.name} at {self.url}: no {name} is served to take photos; export "
                    "with nada-export --encoder ENCODER.pt"
                ) from None
            self._editor = ServedModel(config)
        return self._editor

    def close(self) -> None:
        if self.shared is not None:
            self.shared.close()
            self.shared = None
        self.client.close()

    def __enter__(self) -> GeneratorClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


async def generate_seeds_async(
    url: str,
    model: str,
    seeds: list[int],
    truncation: float = 1.0,
    batch: int | None = None,
    concurrency: int = 4,
    domain=None,
) -> np.ndarray:
    """Seeds split into requests of `batch` (default: the model's max), `concurrency` in flight;
    domain: a multi-domain model's domain (name or index) for every seed, or one per seed."""
    import tritonclient.grpc.aio as aioclient

    client = aioclient.InferenceServerClient(url)
    try:
        try:
            served = ServedModel((await client.get_model_config(model, as_json=True))["config"])
        except Exception as exc:
            raise FieldError(_not_served(model, url, exc)) from None
        z = z_batch(seeds, served.z_dim)
        parts = _requests(len(z), min(batch or served.max_batch, served.max_batch))
        gate = asyncio.Semaphore(concurrency)

        async def one(part: slice) -> np.ndarray:
            async with gate:
                inputs, outputs = _inputs(aioclient, served, z[part], truncation, _part(domain, part))
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
                raise FieldError(f"{{wait}} {timeout:g}: {url} did not serve '{model}' in time ({last})")
            time.sleep(poll)
    finally:
        client.close()


def _not_served(model: str, url: str, exc: Exception) -> str:
    """A FieldError template: why `model` at `url` cannot be asked: no server there at all (say how
    to get one), or the server's own words."""
    status = getattr(exc, "status", None)
    if callable(status) and status() == "StatusCode.UNAVAILABLE":
        return (
            f"{{url}} {url}: no server answers there ({_message(exc)}); start one with nada-serve REPOSITORY, "
            "or give {wait} SECONDS for one that is starting"
        )
    return f"{{model}} {model} at {url}: {_message(exc)}"


def _message(exc: Exception) -> str:
    msg = getattr(exc, "message", None)
    msg = msg() if callable(msg) else msg
    return " ".join(str(msg or exc).split())[:300]
