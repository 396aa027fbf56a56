"""Phase 1 on cached backbone features: the frozen backbone runs once per training image and view, not once
per epoch.

While the backbone is frozen, an image's pooled features never change, so phase 1 is a softmax regression on
them. K augmented views of each training image (plus the image itself) keep the augmentation; validation
stays un-augmented. The head trained here is the classifier's own `dropout` and `head` layers, so phase 2,
evaluation and prediction use the full model unchanged. `--no-feature-cache` keeps the naive path.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

log = logging.getLogger("poc.train.training")

# Above this many bytes of float32 features, the cache is a float16 memmap on disk instead of memory.
MEMORY_BUDGET_BYTES = 1024**3


@dataclass
class FeatureCache:
    train: np.ndarray  # (V, N, D): view 0 is the un-augmented image, views 1..K augmented
    train_labels: np.ndarray  # (N,) class indices, in the training frame's order
    val: np.ndarray  # (M, D) un-augmented
    val_labels: np.ndarray  # (M,)
    seconds: float

    @property
    def views(self) -> int:
        return self.train.shape[0]


def build_cache(model: keras.Model, frames: dict[str, pd.DataFrame], class_names: list[str], image_size: int,
                batch_size: int, augment: list[str], views: int, seed: int,
                progress: Callable[[int, int], None] | None = None, cache_dir: Path | None = None) -> FeatureCache:
    """Features of every training image (un-augmented + `views` augmented copies) and validation image."""
    from poc.data.pipeline import apply_augmentations, augmentation_layers, make_dataset
    from poc.train.features import extract_features, feature_extractor

    start = time.monotonic()
    extractor = feature_extractor(model)
    n_train, n_val = len(frames["train"]), len(frames["val"])
    copies = 1 + (views if augment else 0)  # without augmentation every view would be the same image
    total = copies * n_train + n_val
    width = int(extractor.output_shape[-1])
    on_disk = cache_dir is not None and copies * n_train * width * 4 > MEMORY_BUDGET_BYTES
    offset = [0]

    def step(done: int, _count: int) -> None:
        if progress:
            progress(offset[0] + done, total)

    def extract(dataset, count: int, name: str) -> np.ndarray:
        path = None
        if on_disk:
            cache_dir.mkdir(parents=True, exist_ok=True)
            path = cache_dir / f"{name}.npy"
        out = extract_features(extractor, dataset, count, progress=step, memmap_path=path)
        offset[0] += count
        return out

    plain = make_dataset(frames["train"], class_names, image_size, batch_size)  # frame order, no augmentation
    train = [extract(plain, n_train, "train_view0")]
    layers = augmentation_layers(augment, seed=seed)
    for view in range(1, copies):
        def augmented(batch_index, batch, view=view):  # keyed draws: the same views whatever the threading
            images, labels = batch
            key = tf.stack([tf.constant(view, tf.int64), batch_index])
            return tf.clip_by_value(apply_augmentations(images, layers, key), 0.0, 255.0), labels

        train.append(extract(plain.enumerate().map(augmented), n_train, f"train_view{view}"))
    val = extract(make_dataset(frames["val"], class_names, image_size, batch_size), n_val, "val")
    index = {name: i for i, name in enumerate(class_names)}
    labels = {s: np.array([index[c] for c in frames[s]["label"]], dtype=np.int64) for s in ("train", "val")}
    cache = FeatureCache(np.stack(train) if not on_disk else _stacked_memmap(train, cache_dir), labels["train"],
                         np.asarray(val, dtype=np.float32), labels["val"], time.monotonic() - start)
    log.info("feature cache: %d training images x %d views + %d validation images, %d features each, in %.1f s%s",
             n_train, copies, n_val, width, cache.seconds, f" (float16 memmap in {cache_dir})" if on_disk else "")
    return cache


def _stacked_memmap(views: list[np.ndarray], cache_dir: Path) -> np.ndarray:
    """One (V, N, D) float16 memmap from per-view memmaps, so the per-epoch gather reads one array."""
    out = np.lib.format.open_memmap(cache_dir / "train.npy", mode="w+", dtype=np.float16,
                                    shape=(len(views),) + views[0].shape)
    for i, view in enumerate(views):
        out[i] = view
        Path(view.filename).unlink(missing_ok=True)
    out.flush()
    return out


def head_model(model: keras.Model, width: int) -> keras.Model:
    """features (B, D) -> the classifier's own dropout and head: training it trains the classifier's head."""
    features = keras.Input((width,), name="features")
    probs = model.get_layer("head")(model.get_layer("dropout")(features))  # (B, C)
    return keras.Model(features, probs, name="cached_head")


def training_dataset(cache: FeatureCache, num_classes: int, batch_size: int, seed: int) -> tf.data.Dataset:
    """Each epoch: every training image once, in a fresh seeded order, each time one of its views at random
    (the cached counterpart of one augmented pass over the images)."""
    n = len(cache.train_labels)
    onehot = np.eye(num_classes, dtype=np.float32)[cache.train_labels]
    draws = {"count": 0}

    def gather(indices: np.ndarray):
        rng = np.random.default_rng([seed, draws["count"]])  # sequential map: a deterministic stream
        draws["count"] += 1
        views = rng.integers(0, cache.views, size=len(indices))
        return np.asarray(cache.train[views, indices], dtype=np.float32), onehot[indices]

    def lookup(indices):
        x, y = tf.numpy_function(gather, [indices], (tf.float32, tf.float32))
        x.set_shape((None, cache.train.shape[-1]))
        y.set_shape((None, num_classes))
        return x, y

    return (tf.data.Dataset.range(n).shuffle(n, seed=seed, reshuffle_each_iteration=True).batch(batch_size)
            .map(lookup).prefetch(2))


def validation_dataset(cache: FeatureCache, num_classes: int, batch_size: int) -> tf.data.Dataset:
    onehot = np.eye(num_classes, dtype=np.float32)[cache.val_labels]
    return tf.data.Dataset.from_tensor_slices((cache.val, onehot)).batch(batch_size)
