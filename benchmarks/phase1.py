"""Phase 1 (frozen backbone, new head) on cached features vs the naive path, side by side in one run.

The naive path (`--no-feature-cache`) runs the frozen backbone over every training and validation image in every
epoch; the cached path runs it once per image and view, then trains the head on the features. Both train
the same head for the same number of epochs (patience = epochs, so early stopping never cuts one short), on the
same split, for each seed. Prints phase-1 seconds (feature pass included), validation accuracy, and the ratio.

    python benchmarks/phase1.py                       # vit_b32, 224 px, 50 epochs (long on a CPU)
    python benchmarks/phase1.py --quick               # mobilenet_v2 demo weights, 64 px, a minute or two
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="vit_b32")
    p.add_argument("--weights", default="none", help="none | demo | imagenet | a checkpoint path")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--per-class", type=int, default=6, help="generated images per class (10 classes)")
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--views", type=int, default=3, help="--tl-views of the cached path")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--quick", action="store_true", help="mobilenet_v2, demo weights, 64 px, 10 epochs")
    args = p.parse_args(argv)
    if args.quick:
        args.model, args.weights, args.image_size, args.epochs, args.per_class = "mobilenet_v2", "demo", 64, 10, 12
    return args


def phase1(data: Path, runs: Path, args, seed: int, cached: bool) -> dict:
    from poc.config import RunConfig
    from poc.train.training import train

    config = RunConfig(data=str(data), model=args.model, weights=args.weights, image_size=args.image_size,
                       tl_epochs=args.epochs, ft_epochs=0, patience=args.epochs, batch_size=args.batch_size,
                       seed=seed, feature_cache=cached, tl_views=args.views, val=0.2, test=0.2)
    start = time.monotonic()
    rd = train(config, runs)
    wall = time.monotonic() - start
    info = json.loads(rd.run_json.read_text())
    metrics = json.loads(rd.eval_file("tl", "metrics").read_text())
    return {"seconds": info["timing"]["tl"], "wall": wall, "val_accuracy": metrics["val_accuracy"],
            "test_accuracy": metrics["accuracy"], "train_images": info["dataset"]["counts"]["train"]}


def main(argv=None) -> int:
    import logging

    logging.disable(logging.INFO)
    args = parse_args(argv)
    from poc.data.demo import generate_demo_dataset
    from poc.device import describe_device

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        generate_demo_dataset(data, per_class=args.per_class, size=max(64, args.image_size // 2), seed=0)
        print(f"phase 1 of {args.model} at {args.image_size} px, weights {args.weights}, {args.epochs} epochs, "
              f"{args.per_class * 10} images (60/20/20 split), batch {args.batch_size}, on {describe_device()}")
        print(f"{'seed':>4} {'path':>8} {'phase-1 s':>10} {'val acc':>8} {'test acc':>9}")
        totals = {True: 0.0, False: 0.0}
        for seed in [int(s) for s in args.seeds.split(",")]:
            for cached in (True, False):
                r = phase1(data, Path(tmp) / f"runs{seed}{cached}", args, seed, cached)
                totals[cached] += r["seconds"]
                label = f"cached K={args.views}" if cached else "naive"
                print(f"{seed:>4} {label:>8} {r['seconds']:>10.1f} {r['val_accuracy']:>8.3f} "
                      f"{r['test_accuracy']:>9.3f}", flush=True)
        print(f"ours (cached) {totals[True]:.1f} s, baseline (naive) {totals[False]:.1f} s, "
              f"ratio {totals[False] / totals[True]:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
