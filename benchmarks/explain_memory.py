"""Peak memory of attention rollout for ViT-B/16 at 384 px: ours (blocks one at a time, float32, bounded
batches) vs the whole attention stack at once (every block's (B, H, T, T) from one model call, float64).

Each path runs in a fresh Python process, so its peak resident memory (ru_maxrss) is its own: TensorFlow
(about 0.8 GB on import), the model (86 M parameters, weights none) and the rollout. Also printed: the
rollout's own part, the peak minus the peak once the model is built. The target (issue 9) is a process peak
under 2 GB.

    python benchmarks/explain_memory.py               # ViT-B/16, 384 px, 4 images
    python benchmarks/explain_memory.py --quick       # ViT-Ti/16, 224 px, 2 images: seconds, not minutes
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

LIMIT_MB = 2048
PATHS = ("ours", "all-at-once")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="vit_b16")
    p.add_argument("--image-size", type=int, default=384)
    p.add_argument("--images", type=int, default=4)
    p.add_argument("--no-baseline", action="store_true", help="measure ours only")
    p.add_argument("--quick", action="store_true", help="vit_ti16 at 224 px, 2 images")
    p.add_argument("--child", choices=PATHS, help=argparse.SUPPRESS)  # one measurement, in its own process
    args = p.parse_args(argv)
    if args.quick:
        args.model, args.image_size, args.images = "vit_ti16", 224, 2
    return args


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def measure(args) -> dict:
    """Runs in the child: build the model (the reference peak), then the rollout of `args.child`."""
    import numpy as np

    from poc.explain.attention import rollout_maps
    from poc.explain.rollout import attention_rollout
    from poc.models import build
    from poc.models.vit import attention_model

    model = build(args.model, 10, args.image_size, "none")
    pixels = np.random.default_rng(0).uniform(0, 255, (args.images, args.image_size, args.image_size, 3))
    pixels = pixels.astype(np.float32)
    before = peak_mb()
    start = time.perf_counter()
    if args.child == "ours":
        maps = rollout_maps(model, pixels)
    else:
        outputs = attention_model(model.get_layer("backbone"))(model.get_layer("preprocess")(pixels), training=False)
        maps = attention_rollout([np.asarray(a, np.float64) for a in outputs[1:]])
    return {"peak_mb": peak_mb(), "built_peak_mb": before, "seconds": time.perf_counter() - start,
            "maps": list(maps.shape)}


def run_child(path: str, args) -> dict:
    argv = [sys.executable, __file__, "--child", path, "--model", args.model,
            "--image-size", str(args.image_size), "--images", str(args.images)]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{path} failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(measure(args)))
        return 0
    from poc.device import describe_device

    print(f"attention rollout of {args.images} images, {args.model} at {args.image_size} px, weights none, "
          f"on {describe_device()}")
    print(f"{'path':>12} {'peak MB':>9} {'rollout MB':>11} {'seconds':>8}  maps")
    results = {}
    for path in PATHS[:1] if args.no_baseline else PATHS:
        r = results[path] = run_child(path, args)
        print(f"{path:>12} {r['peak_mb']:>9.0f} {r['peak_mb'] - r['built_peak_mb']:>11.0f} "
              f"{r['seconds']:>8.1f}  {tuple(r['maps'])}", flush=True)
    ours = results["ours"]["peak_mb"]
    line = f"ours {ours:.0f} MB peak ({'under' if ours < LIMIT_MB else 'OVER'} the {LIMIT_MB} MB target)"
    if "all-at-once" in results:
        base = results["all-at-once"]["peak_mb"]
        line += f", baseline (all at once) {base:.0f} MB, ratio {base / ours:.2f}x"
    print(line)
    return 0 if ours < LIMIT_MB else 1


if __name__ == "__main__":
    sys.exit(main())
