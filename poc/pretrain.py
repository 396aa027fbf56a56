"""`python -m poc.pretrain`: pretrain a demo backbone on the generated shapes task and save only the backbone.

Why: offline, the demo can only start from `--weights none`, and a frozen random backbone gives near-constant
features (MobileNetV2 at 64 px: every image gets the same prediction). So the project pretrains its small demo
backbones itself, on a SEPARATE task (`poc.data.shapes`: 28 classes of shapes, strokes, glyphs and textures,
none of them a cartoon class), and the demo transfers from them (`--weights demo`). These are NOT ImageNet
weights.

The classifier is `poc.models.build(name, 28, size, "none")`, trained end to end (every layer trainable,
BatchNorm in training mode) with Adam(W), linear warmup then cosine decay, light shift/zoom augmentation.
Held-out accuracy is measured on a disjoint seed and printed; the head is discarded:
  mobilenet_v2 -> `backbone.save_weights(...)`       poc/pretrained/demo_mobilenet_v2_64.weights.h5
  vit_ti16     -> Google-layout .npz without head    poc/pretrained/demo_vit_ti16_64.npz (float16)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# Per model: what reproduces the committed files on a 2-core CPU (see poc/pretrained/README.md).
RECIPES = {
    "mobilenet_v2": {"epochs": 12, "train_images": 6000, "lr": 2e-3, "weight_decay": 1e-4, "warmup_epochs": 1},
    "vit_ti16": {"epochs": 15, "train_images": 6000, "lr": 1e-3, "weight_decay": 0.05, "warmup_epochs": 2},
}
VAL_IMAGES = 1400  # 50 per class, from a different seed than the training images
BN_REFRESH_BATCHES = 40


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m poc.pretrain", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, choices=sorted(RECIPES))
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=None, help="default: the model's recipe")
    p.add_argument("--train-images", type=int, default=None, help="default: the model's recipe")
    p.add_argument("--val-images", type=int, default=VAL_IMAGES)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=None, help="peak learning rate; default: the model's recipe")
    p.add_argument("--weight-decay", type=float, default=None, help="AdamW decay; default: the model's recipe")
    p.add_argument("--seed", type=int, default=0, help="training images use this seed, held-out ones seed + 1")
    p.add_argument("--out", type=Path, default=None, help="default: the path poc.models.pretrained expects")
    args = p.parse_args(argv)
    recipe = RECIPES[args.model]
    for key in ("epochs", "train_images", "lr", "weight_decay"):
        if getattr(args, key) is None:
            setattr(args, key, recipe[key])
    args.warmup_epochs = min(recipe["warmup_epochs"], max(args.epochs - 1, 0))
    if args.out is None:
        from poc.models.pretrained import DEMO_WEIGHTS, PRETRAINED_DIR

        name = DEMO_WEIGHTS[args.model].name.replace("_64", f"_{args.image_size}")
        args.out = PRETRAINED_DIR / name
    return args


def make_datasets(args):
    """(train, held-out) tf.data pipelines of (pixels (B, S, S, 3) float32 in [0, 255], labels (B,))."""
    import keras
    import tensorflow as tf

    from poc.data.shapes import make_shapes

    start = time.time()
    x_train, y_train = make_shapes(args.train_images, args.image_size, seed=args.seed)
    x_val, y_val = make_shapes(args.val_images, args.image_size, seed=args.seed + 1)
    print(f"generated {len(x_train)} training + {len(x_val)} held-out shape images at {args.image_size} px "
          f"in {time.time() - start:.0f} s", flush=True)
    # Light augmentation: the generator already randomises colour, pose, scale and noise.
    augment = [keras.layers.RandomTranslation(0.08, 0.08, fill_mode="reflect", seed=args.seed),
               keras.layers.RandomZoom(0.1, fill_mode="reflect", seed=args.seed)]

    def jitter(images, labels):
        for layer in augment:
            images = layer(images, training=True)
        return tf.clip_by_value(images, 0.0, 255.0), labels

    train = (tf.data.Dataset.from_tensor_slices((x_train, y_train))
             .shuffle(len(x_train), seed=args.seed, reshuffle_each_iteration=True)
             .batch(args.batch_size, drop_remainder=True)
             .map(lambda x, y: (tf.cast(x, tf.float32), y))
             .map(jitter, num_parallel_calls=tf.data.AUTOTUNE)
             .prefetch(tf.data.AUTOTUNE))
    val = (tf.data.Dataset.from_tensor_slices((x_val, y_val)).batch(256)
           .map(lambda x, y: (tf.cast(x, tf.float32), y)).prefetch(tf.data.AUTOTUNE))
    return train, val, x_train


def compile_model(model, args, steps_per_epoch: int) -> None:
    """AdamW, linear warmup to the peak lr then cosine decay to zero; clipped gradients (ViTs need both)."""
    import keras

    warmup = args.warmup_epochs * steps_per_epoch
    total = args.epochs * steps_per_epoch
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else args.lr, decay_steps=max(total - warmup, 1),
        warmup_target=args.lr if warmup else None, warmup_steps=warmup)
    optimizer = keras.optimizers.AdamW(schedule, weight_decay=args.weight_decay, global_clipnorm=1.0)
    model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(), metrics=["accuracy"])


def refresh_batchnorm(model, images: np.ndarray, batch_size: int) -> int:
    """Re-estimates BatchNorm moving statistics as the plain mean over training batches; returns the count.

    Keras' MobileNetV2 uses momentum 0.999, so after a short run the moving averages still mix in statistics
    from early weights; a frozen backbone (phase 1 of every transfer run) would then see stale statistics.
    """
    import keras

    layers = [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
    if not layers:
        return 0
    saved = [layer.momentum for layer in layers]
    rng = np.random.default_rng(0)
    order = rng.permutation(len(images))
    for k in range(BN_REFRESH_BATCHES):
        for layer in layers:  # momentum k/(k+1): the running value becomes the mean of batches 0..k
            layer.momentum = k / (k + 1)
        batch = images[order[k * batch_size:(k + 1) * batch_size]].astype(np.float32)
        model(batch, training=True)
    for layer, momentum in zip(layers, saved):
        layer.momentum = momentum
    return len(layers)


def save_backbone(model, name: str, out: Path) -> Path:
    """Writes only the backbone: Keras weights for CNNs, a head-less Google .npz (float16) for ViTs."""
    out.parent.mkdir(parents=True, exist_ok=True)
    backbone = model.get_layer("backbone")
    fd, tmp = tempfile.mkstemp(dir=out.parent, suffix=".tmp" + "".join(out.suffixes))
    os.close(fd)
    if name.startswith("vit"):
        from poc.models.vit_checkpoint import POSEMB_KEY, export_vit_checkpoint

        export_vit_checkpoint(backbone, tmp)  # float32, no head
        with np.load(tmp) as npz:
            # float16 halves the file; the position embedding stays float32 because the loader may resize it
            # with scipy.ndimage, which has no float16.
            arrays = {key: npz[key] if key == POSEMB_KEY else npz[key].astype(np.float16) for key in npz.files}
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    else:
        backbone.save_weights(tmp)
    os.replace(tmp, out)
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import keras

    from poc.data.shapes import SHAPE_CLASSES
    from poc.models import build

    keras.utils.set_random_seed(args.seed)
    started = time.time()
    train, val, x_train = make_datasets(args)
    steps = args.train_images // args.batch_size
    model = build(args.model, len(SHAPE_CLASSES), args.image_size, "none")
    model.trainable = True
    compile_model(model, args, steps)
    print(f"pretraining {args.model} at {args.image_size} px on {len(SHAPE_CLASSES)} shape classes: "
          f"{args.epochs} epochs x {steps} steps, batch {args.batch_size}, AdamW lr {args.lr:g} "
          f"(warmup {args.warmup_epochs} epochs, cosine), weight decay {args.weight_decay:g}, "
          f"{model.count_params():,} parameters", flush=True)
    fit_start = time.time()
    model.fit(train, validation_data=val, epochs=args.epochs, verbose=2)
    fit_seconds = time.time() - fit_start
    _, accuracy = model.evaluate(val, verbose=0)
    print(f"held-out accuracy after training: {accuracy:.4f}", flush=True)
    if refresh_batchnorm(model, x_train, args.batch_size):
        _, accuracy = model.evaluate(val, verbose=0)
        print(f"held-out accuracy after refreshing BatchNorm statistics: {accuracy:.4f}", flush=True)
    out = save_backbone(model, args.model, args.out)
    print(f"RESULT model={args.model} size={args.image_size} classes={len(SHAPE_CLASSES)} "
          f"held_out_accuracy={accuracy:.4f} chance={1 / len(SHAPE_CLASSES):.4f} fit_seconds={fit_seconds:.0f} "
          f"total_seconds={time.time() - started:.0f} file={out} bytes={out.stat().st_size}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
