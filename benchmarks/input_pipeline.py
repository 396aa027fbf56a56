"""Input-pipeline epochs with and without the decoded-image cache, as a ratio (same run, same machine).

Decoding with PIL (every mode, EXIF) is the price of correctness; the in-memory cache pays it once.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def epoch_seconds(ds, epochs: int) -> list[float]:
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        for _batch in ds:
            pass
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--per-class", type=int, default=30)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()

    from poc.data import pipeline
    from poc.data.demo import generate_demo_dataset
    from poc.data.scan import scan_dataset
    from poc.data.split import split_dataset

    with tempfile.TemporaryDirectory() as tmp:
        generate_demo_dataset(Path(tmp), per_class=args.per_class, size=128, seed=0)
        report = scan_dataset(tmp)
        frame = split_dataset(report)
        train = frame[frame["split"] == "train"]
        cached = pipeline.make_dataset(train, report.class_names, args.image_size, 32, training=True,
                                       augment=["flip"])
        with mock.patch.object(pipeline, "CACHE_BUDGET_BYTES", 0):
            uncached = pipeline.make_dataset(train, report.class_names, args.image_size, 32, training=True,
                                             augment=["flip"])
        with_cache = epoch_seconds(cached, args.epochs)
        without = epoch_seconds(uncached, args.epochs)
    later = slice(1, None)  # the first cached epoch fills the cache
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    print(f"{len(train)} training images at {args.image_size} px, {args.epochs} epochs")
    print(f"without cache: {mean(without):.3f} s/epoch")
    print(f"with cache:    first {with_cache[0]:.3f} s, then {mean(with_cache[later]):.3f} s/epoch")
    print(f"speed-up after the first epoch: {mean(without) / mean(with_cache[later]):.1f}x")


if __name__ == "__main__":
    main()
