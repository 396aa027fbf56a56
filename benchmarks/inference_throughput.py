"""Inference images/second per backbone at one size, printed as ratios to MobileNetV2 (same run, same machine)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def images_per_second(model, batch: np.ndarray, repeats: int) -> float:
    model(batch, training=False)  # trace and warm up
    start = time.perf_counter()
    for _ in range(repeats):
        model(batch, training=False)
    return repeats * len(batch) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", default="mobilenet_v2,vit_ti16,vit_s16,resnet50")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    from poc.device import describe_device
    from poc.models import build

    batch = np.random.default_rng(0).uniform(0, 255, (args.batch, args.image_size, args.image_size, 3))
    batch = batch.astype("float32")
    results = {}
    for name in args.models.split(","):
        model = build(name, 10, args.image_size)
        results[name] = (images_per_second(model, batch, args.repeats), model.count_params())
    base = results.get("mobilenet_v2", next(iter(results.values())))[0]
    print(f"device: {describe_device()}; {args.image_size} px, batch {args.batch}")
    print(f"{'model':<16}{'params':>12}{'images/s':>12}{'vs mobilenet_v2':>18}")
    for name, (ips, params) in results.items():
        print(f"{name:<16}{params:>12,}{ips:>12.1f}{ips / base:>17.2f}x")


if __name__ == "__main__":
    main()
