"""Training throughput (images/second through a compiled train step, every layer trainable) of our classifiers,
beside a stock keras.applications classifier of the same backbone, measured side by side in one run.

For the ViT there is no stock Keras model: the reference is timm's published figure (ViT-B/32 at 224 px, about
1.7k img/s training with AMP on an RTX 3090; MobileNetV2 about 1.8k), printed for comparison and marked as not
measured here. On a GPU, mixed precision and XLA switch on as in training (`poc.device.configure`).

    python benchmarks/throughput.py                 # mobilenet_v2 and vit_b32 at 224 px
    python benchmarks/throughput.py --quick         # 96 px, fewer steps
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

TIMM_RTX3090_AMP = {"vit_b32": 1700, "mobilenet_v2": 1800}  # img/s training, published, 224 px


def train_images_per_second(model, size: int, batch: int, steps: int, jit: bool) -> float:
    import keras

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (batch, size, size, 3)).astype("float32")
    y = keras.utils.to_categorical(rng.integers(0, 10, batch), 10)
    model.trainable = True
    model.compile(optimizer=keras.optimizers.Adam(1e-5), loss="categorical_crossentropy", jit_compile=jit)
    model.train_on_batch(x, y)  # trace, compile, warm up
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    return steps * batch / (time.perf_counter() - start)


def stock_mobilenet(size: int):
    import keras

    base = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(size, size, 3), pooling="avg")
    pixels = keras.Input((size, size, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(pixels)
    return keras.Model(pixels, keras.layers.Dense(10, activation="softmax", dtype="float32")(base(x)))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="mobilenet_v2,vit_b32")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    if args.quick:
        args.image_size, args.steps = 96, 3

    from poc.device import configure, describe_device
    from poc.models import build

    speedups = configure()
    print(f"training throughput at {args.image_size} px, batch {args.batch}, {args.steps} steps, on "
          f"{describe_device()} (mixed precision {speedups['mixed_precision']}, XLA {speedups['jit_compile']})")
    print(f"{'model':<14}{'ours img/s':>12}  {'baseline':>34}{'ratio':>8}")
    for name in args.models.split(","):
        ours = train_images_per_second(build(name, 10, args.image_size), args.image_size, args.batch, args.steps,
                                       speedups["jit_compile"])
        if name == "mobilenet_v2":
            stock = train_images_per_second(stock_mobilenet(args.image_size), args.image_size, args.batch,
                                            args.steps, speedups["jit_compile"])
            print(f"{name:<14}{ours:>12.1f}  {f'{stock:.1f} (keras.applications)':>34}{ours / stock:>7.2f}x")
        else:
            ref = TIMM_RTX3090_AMP.get(name)
            text = f"{ref} (timm, RTX 3090; not here)" if ref else "-"
            print(f"{name:<14}{ours:>12.1f}  {text:>34}{'-':>8}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
