"""Which accelerator a run uses, and the GPU-only speedups (mixed precision, XLA) that follow from it."""

from __future__ import annotations

import platform
import sys


def describe_device() -> str:
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return f"CPU ({platform.processor() or platform.machine()})"
    details = tf.config.experimental.get_device_details(gpus[0])
    return f"GPU x{len(gpus)} ({details.get('device_name', gpus[0].name)})"


def has_gpu() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def configure(mixed_precision: str = "auto", jit_compile: str = "auto") -> dict:
    """Turn on mixed_float16 and XLA on a GPU ("auto"), or as forced by on/off; returns what was chosen."""
    import keras
    import tensorflow as tf

    gpu = has_gpu()
    for device in tf.config.list_physical_devices("GPU"):
        tf.config.experimental.set_memory_growth(device, True)
    use_mixed = mixed_precision == "on" or (mixed_precision == "auto" and gpu)
    keras.mixed_precision.set_global_policy("mixed_float16" if use_mixed else "float32")
    use_xla = jit_compile == "on" or (jit_compile == "auto" and gpu)
    return {"mixed_precision": use_mixed, "jit_compile": use_xla}


def versions() -> dict:
    import keras
    import tensorflow as tf

    return {"python": sys.version.split()[0], "tensorflow": tf.__version__, "keras": keras.__version__}
