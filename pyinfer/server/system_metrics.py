"""CPU and memory through psutil, the GPU through NVML (null where there is none)."""

from __future__ import annotations

import logging
import time
from typing import Any

import psutil

log = logging.getLogger(__name__)

MB = 1024 * 1024


class SystemMetrics:
    def __init__(self, gpu_index: int = 0):
        psutil.cpu_percent(interval=None)  # the first reading is meaningless; later ones cover the gap
        self.gpu_index = gpu_index
        self.nvml = _nvml()

    def snapshot(self) -> dict[str, Any]:
        memory = psutil.virtual_memory()
        return {
            "cpu": {
                "utilization_percent": psutil.cpu_percent(interval=None),
                "core_count": psutil.cpu_count(),
            },
            "memory": {
                "used_mb": round((memory.total - memory.available) / MB, 1),
                "total_mb": round(memory.total / MB, 1),
                "available_mb": round(memory.available / MB, 1),
            },
            "gpu": self._gpu(),
            "timestamp": time.time(),
        }

    def _gpu(self) -> dict[str, Any] | None:
        if self.nvml is None:
            return None
        nvml = self.nvml
        try:
            handle = nvml.nvmlDeviceGetHandleByIndex(self.gpu_index)
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            return {
                "device_id": self.gpu_index,
                "utilization_percent": nvml.nvmlDeviceGetUtilizationRates(handle).gpu,
                "memory_used_mb": round(memory.used / MB, 1),
                "memory_total_mb": round(memory.total / MB, 1),
                "temperature_celsius": nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU),
            }
        except nvml.NVMLError as e:
            log.warning("NVML query failed: %s", e)
            return None


def _nvml():
    """The initialized pynvml module, or None without an NVIDIA driver."""
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml if pynvml.nvmlDeviceGetCount() > 0 else None
    except Exception:  # no library, no driver, no device
        return None
