"""Our input pipeline beside keras.utils.image_dataset_from_directory on the same folder, same settings.

Prints images/second for epoch 1 (cold: files decoded) and epoch 2 (warm: ours gathers decoded images from
memory, Keras decodes again), the ratio ours / Keras, and how many classes the first training batches mix.
Both read the same generated demo dataset at the same image size and batch size, shuffled, in one process.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def epoch_rates(ds, images: int, epochs: int = 2) -> list[float]:
    """Images/second of each full pass over `ds`."""
    rates = []
    for _ in range(epochs):
        start = time.perf_counter()
        for _batch in ds:
            pass
        rates.append(images / (time.perf_counter() - start))
    return rates


def classes_per_batch(ds, batches: int) -> list[int]:
    """Distinct classes in each of the first `batches` batches of one-hot labelled `ds`."""
    return [len(set(labels.numpy().argmax(axis=1))) for _, labels in ds.take(batches)]


def folder_frame(root: Path):
    """Every image of `root/<class>/` as (path, label) rows, path-sorted like a scan's split."""
    import pandas as pd

    rows = [{"path": str(p), "label": p.parent.name} for p in sorted(root.glob("*/*")) if p.is_file()]
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--per-class", type=int, default=200, help="images per class (10 classes)")
    parser.add_argument("--source-size", type=int, default=128, help="side of the generated images, px")
    parser.add_argument("--image-size", type=int, default=128, help="side the pipelines resize to, px")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="fresh datasets per pipeline; medians printed")
    parser.add_argument("--epochs", type=int, default=5, help="passes per dataset: the first decodes the files")
    parser.add_argument("--quick", action="store_true", help="500 images at 96 px: well under a minute")
    args = parser.parse_args()
    if args.quick:
        args.per_class, args.source_size, args.image_size = 50, 96, 96

    import keras
    import numpy as np

    from poc.data.demo import generate_demo_dataset
    from poc.data.pipeline import make_dataset

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        generate_demo_dataset(root, per_class=args.per_class, size=args.source_size, seed=0)
        frame = folder_frame(root)
        class_names = sorted(frame["label"].unique())
        n = len(frame)

        def ours():
            return make_dataset(frame, class_names, args.image_size, args.batch_size, training=True, seed=args.seed)

        def theirs():
            return keras.utils.image_dataset_from_directory(
                root, label_mode="categorical", class_names=class_names, image_size=(args.image_size,) * 2,
                batch_size=args.batch_size, shuffle=True, seed=args.seed, interpolation="bilinear", verbose=False)

        runs = {"ours": [], "keras": []}
        for repeat in range(args.repeats):  # fresh datasets each time, alternating which goes first
            for name in (("ours", "keras") if repeat % 2 == 0 else ("keras", "ours")):
                runs[name].append(epoch_rates(ours() if name == "ours" else theirs(), n, args.epochs))
        ours_rates, theirs_rates = (np.median(runs[name], axis=0) for name in ("ours", "keras"))
        ours_mix = classes_per_batch(ours(), 10)
        theirs_mix = classes_per_batch(theirs(), 10)

    print(f"{n} images ({len(class_names)} classes, {args.source_size} px files) -> {args.image_size} px, "
          f"batch {args.batch_size}, shuffled, seed {args.seed}; median of {args.repeats} repeats")
    print(f"{'':28}{'epoch 1 (cold)':>16}{'epoch 2 (warm)':>16}")
    print(f"{'ours (poc.data.pipeline)':28}{ours_rates[0]:>12.0f} i/s{ours_rates[1]:>12.0f} i/s")
    print(f"{'image_dataset_from_directory':28}{theirs_rates[0]:>12.0f} i/s{theirs_rates[1]:>12.0f} i/s")
    ratio = ours_rates / theirs_rates
    print(f"{'ratio ours / keras':28}{ratio[0]:>15.2f}x{ratio[1]:>15.2f}x")
    total = {name: args.epochs / np.sum(1.0 / rates) for name, rates in (("ours", ours_rates), ("keras", theirs_rates))}
    print(f"all {args.epochs} epochs: ours {total['ours']:.0f} i/s, keras {total['keras']:.0f} i/s, "
          f"ratio {total['ours'] / total['keras']:.2f}x")
    print(f"distinct classes in each of the first 10 batches (of {len(class_names)}): ours {ours_mix}, "
          f"keras {theirs_mix}")


if __name__ == "__main__":
    main()
