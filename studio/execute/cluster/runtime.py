"""The driver's view of the Ray workers' runtime (see `ClusterRuntime`)."""

from __future__ import annotations

from typing import Any

from studio.errors import ClusterError
from studio.execute.cluster.address import import_ray, resources_text
from studio.execute.runtime import ModelBudget, Runtime, choose_precision


class ClusterRuntime(Runtime):
    """The driver's view of the workers' runtime: the device they run on (a GPU when the
    cluster has any and the pipeline allows it), for precision choices and cache keys.
    The driver itself never loads a model."""

    def __init__(self, device: str, precision: str, budget: ModelBudget, cluster: dict[str, float]):
        super().__init__(device, precision, budget)
        gpus = cluster.get("GPU", 0) >= 1 and device != "cpu"
        if device.startswith("cuda") and not gpus:
            raise ClusterError(f"device {device!r} was asked for, but the Ray cluster has no GPU "
                               f"(resources: {resources_text(cluster)}); use device: auto or cpu")
        self._device = "cuda" if gpus else "cpu"
        self.gpu_bf16: bool | None = None  # asked of a GPU worker when a choice needs it

    def precision_for(self, supported: tuple[str, ...]) -> str:
        if self._device == "cuda" and self.requested_precision == "auto" and "bf16" in supported:
            if self.gpu_bf16 is None:
                self.gpu_bf16 = _gpu_supports_bf16()
            return choose_precision("auto", "cuda", supported, bf16_ok=self.gpu_bf16)
        return choose_precision(self.requested_precision, self._device, supported, bf16_ok=False)

    def describe(self) -> dict[str, Any]:
        """The workers' device; the models live in the workers, so no cache here."""
        return {"device": self._device, "requested_device": self.requested_device,
                "precision": self.requested_precision}


def _gpu_supports_bf16() -> bool:
    ray = import_ray()

    @ray.remote(num_gpus=1, num_cpus=0)
    def probe() -> bool:
        import torch

        return bool(torch.cuda.is_bf16_supported())

    return bool(ray.get(probe.remote()))
