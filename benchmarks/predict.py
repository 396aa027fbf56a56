"""Live-predict latency for one image: our compiled predict call vs `model.predict` (the baseline) and the
eager model call, side by side in one run, per model.

The three calls take turns on the same random 224 px image, after one warm-up each (tracing, Keras'
predict-function build), so a busy machine slows all three alike. Prints the p50 of each and the ratio
baseline / ours; issue 9 asks for at least 3x.

    python benchmarks/predict.py                  # mobilenet_v2 and vit_b32 at 224 px, 30 rounds
    python benchmarks/predict.py --quick          # 10 rounds
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


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="mobilenet_v2,vit_b32")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--rounds", type=int, default=30, help="timed calls of each kind, taking turns")
    p.add_argument("--quick", action="store_true", help="10 rounds")
    args = p.parse_args(argv)
    if args.quick:
        args.rounds = 10
    return args


def latencies(model, image_size: int, rounds: int) -> dict[str, float]:
    """p50 seconds of one image through each call, the calls interleaved round by round."""
    from poc.inference import compile_predict

    ours = compile_predict(model, image_size)
    calls = {
        "ours (compiled)": lambda x: np.asarray(ours(x)),
        "model.predict": lambda x: model.predict(x, verbose=0),
        "eager call": lambda x: np.asarray(model(x, training=False)),
    }
    image = np.random.default_rng(0).uniform(0, 255, (1, image_size, image_size, 3)).astype(np.float32)
    times: dict[str, list[float]] = {name: [] for name in calls}
    for call in calls.values():
        call(image)  # warm-up: traces / builds the predict function
    for _ in range(rounds):
        for name, call in calls.items():
            start = time.perf_counter()
            call(image)
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) for name, t in times.items()}


def main(argv=None) -> int:
    args = parse_args(argv)
    from poc.device import describe_device, has_gpu
    from poc.models import build

    print(f"one {args.image_size} px image, weights none, p50 of {args.rounds} rounds, on {describe_device()} "
          f"(XLA {'on' if has_gpu() else 'off'} for ours)")
    print(f"{'model':<14}{'ours ms':>9}{'model.predict ms':>18}{'eager ms':>10}{'ratio':>8}")
    for name in args.models.split(","):
        model = build(name, 10, args.image_size, "none")
        p50 = latencies(model, args.image_size, args.rounds)
        ours, base, eager = (p50[k] * 1000 for k in ("ours (compiled)", "model.predict", "eager call"))
        print(f"{name:<14}{ours:>9.1f}{base:>18.1f}{eager:>10.1f}{base / ours:>7.1f}x", flush=True)
    print("ratio = model.predict / ours (the baseline is model.predict)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
