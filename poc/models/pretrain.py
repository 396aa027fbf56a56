"""`python -m poc pretrain`: pretrain a demo backbone on the generated shapes task; save the backbone and its head.

Why: offline, the demo can only start from `--weights none`, and a frozen random backbone gives near-constant
features (MobileNetV2 at 64 px: every image gets the same prediction). So the project pretrains its small demo
backbones itself, on a SEPARATE task (`poc.data.shapes`: 28 classes of shapes, strokes, glyphs and textures,
none of them a cartoon class), and the demo transfers from them (`--weights demo`). These are NOT ImageNet
weights.

The classifier is `poc.models.build(name, 28, size, "none")`, trained end to end (every layer trainable,
BatchNorm in training mode) with AdamW, linear warmup then cosine decay. Two recipes: epochs over one generated
set with light shift/zoom augmentation (`pretrain_epochs`: the CNN, ViT-Ti/16), or stages over a stream of
fresh images, low resolution first (`pretrain_stages`: the demo ViT-Ti/8). Held-out accuracy is measured on a
disjoint seed and printed. The backbone file holds no head; the 28-class head goes beside it (`.head.npz`):
  mobilenet_v2 -> `backbone.save_weights(...)`       poc/pretrained/demo_mobilenet_v2_64.weights.h5
  vit_ti16     -> Google-layout .npz without head    poc/pretrained/demo_vit_ti16_64.npz (float16)
  vit_ti8      -> Google-layout .npz without head    poc/pretrained/demo_vit_ti8_64.npz (float16)

Beside training: `--evaluate` prints the held-out accuracy of a backbone with its head (default: the committed
files), `--fit-head` trains the head on the frozen backbone (a linear probe), and `--distill TEACHER` adds
DeiT-style distillation from a committed demo classifier to the staged recipe: hard labels (the teacher's
argmax), or with `--distill-temperature T` DeiT's soft variant (the teacher's probabilities softened by T).
`--pool N` swaps the endless stream for a finite pool of N images seen in augmented views, the few-images regime
that distillation is meant for.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import keras
import numpy as np

from poc.errors import UserError
from poc.models.pretrained import DEMO_IMAGE_SIZE, DEMO_WEIGHTS, PRETRAINED_DIR, demo_weights_path, load_head, save_head

# Per model: what reproduces the committed files on a 2-core CPU (see poc/pretrained/README.md).
# XLA helps the ViT on CPU (+25%) but slows MobileNetV2's depthwise convolutions by an order of magnitude.
# val_every 0: no per-epoch validation for MobileNetV2, whose BatchNorm moving averages (momentum 0.999) lag
# far behind its weights during such a short run, so held-out accuracy reads chance until `refresh_batchnorm`.
RECIPES = {
    "mobilenet_v2": {"epochs": 12, "train_images": 6000, "batch_size": 64, "lr": 2e-3, "weight_decay": 0.01,
                     "warmup_epochs": 1, "jit_compile": False, "val_every": 0},
    "vit_ti16": {"epochs": 18, "train_images": 8000, "batch_size": 32, "lr": 1e-3, "weight_decay": 0.05,
                 "warmup_epochs": 1, "jit_compile": True, "val_every": 2},
    # The demo ViT: a stream of fresh images (never an image twice: the generator is free and a ViT, lacking a
    # CNN's priors, needs data more than epochs), most steps at 32 px (17 tokens, ~4x cheaper per image), then a
    # short stage at 64 px with the position embedding resized (train low, test high: FixRes, arXiv 1906.06423).
    # Stages: (image size, steps, peak lr); each stage warms up then decays to zero.
    "vit_ti8": {"stages": ((32, 2200, 5e-4), (64, 250, 2e-4)), "batch_size": 64, "weight_decay": 0.05,
                "warmup_steps": 100, "jit_compile": True, "epochs": None, "train_images": None, "lr": None},
}
VAL_IMAGES = 1400  # 50 per class, from a different seed than the training images
HEAD_IMAGES, HEAD_EPOCHS, HEAD_BATCH = 5600, 100, 64  # --fit-head: features of 200 images per class, Adam
DISTILL_TEACHERS = ("mobilenet_v2",)  # committed demo classifiers (backbone + head) that can teach
BN_REFRESH_BATCHES = 40


def _stages(text: str) -> tuple[tuple[int, int, float], ...]:
    """"32:2000:1e-3,64:300:3e-4" -> ((32, 2000, 0.001), (64, 300, 0.0003)): image size, steps, peak lr."""
    try:
        stages = tuple((int(size), int(steps), float(lr)) for size, steps, lr in
                       (part.split(":") for part in text.split(",")))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--stages {text!r}: expected SIZE:STEPS:LR[,SIZE:STEPS:LR...], "
                                         f"e.g. 32:2000:1e-3,64:300:3e-4") from None
    return stages


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m poc pretrain", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, choices=sorted(RECIPES))
    p.add_argument("--image-size", type=int, default=None, help="default 64; a staged recipe: its last stage")
    p.add_argument("--epochs", type=int, default=None, help="default: the model's recipe")
    p.add_argument("--train-images", type=int, default=None, help="default: the model's recipe")
    p.add_argument("--stages", type=_stages, default=None,
                   help="staged recipes (fresh images): SIZE:STEPS:LR,...; default: the model's recipe")
    p.add_argument("--val-images", type=int, default=VAL_IMAGES)
    p.add_argument("--batch-size", type=int, default=None, help="default: the model's recipe")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate; default: the model's recipe")
    p.add_argument("--weight-decay", type=float, default=None, help="AdamW decay; default: the model's recipe")
    p.add_argument("--no-augment", action="store_true", help="skip the light shift/zoom augmentation")
    p.add_argument("--seed", type=int, default=0, help="training images use this seed, held-out ones seed + 1")
    p.add_argument("--out", type=Path, default=None, help="default: the path poc.models.pretrained expects")
    p.add_argument("--evaluate", action="store_true",
                   help="no training: print the held-out accuracy of --out (default: the committed backbone) "
                        "with the head beside it")
    p.add_argument("--fit-head", action="store_true",
                   help="no training: fit the 28-class head on the frozen --out backbone (the features of "
                        "--train-images images, default 5600) and write it beside the backbone")
    p.add_argument("--distill", choices=sorted(DISTILL_TEACHERS), default=None,
                   help="staged recipes: hard-label distillation from this committed demo classifier (DeiT)")
    p.add_argument("--distill-temperature", type=float, default=None,
                   help="with --distill: DeiT's soft distillation instead, on the teacher's probabilities "
                        "softened by this temperature (DeiT and Hinton et al. use about 3)")
    p.add_argument("--init", default=None,
                   help="staged recipes: start from a backbone file and the head beside it ('demo': the "
                        "committed one) instead of from scratch")
    p.add_argument("--start-image", type=int, default=0,
                   help="staged recipes: index of the stream's first training image (continuing a run: past "
                        "the images it saw)")
    p.add_argument("--pool", type=int, default=None,
                   help="staged recipes: train on a finite pool of N images (from --start-image), reshuffled each "
                        "pass and shifted/zoomed at random each draw, instead of fresh images")
    p.add_argument("--eval-every", type=int, default=None,
                   help="staged recipes: held-out accuracy every N steps (default: 5 times a stage)")
    p.add_argument("--curve", type=Path, default=None,
                   help="staged recipes: append the held-out accuracy curve to this CSV")
    args = p.parse_args(argv)
    recipe = RECIPES[args.model]
    args.head_images = args.train_images or HEAD_IMAGES
    for key in ("epochs", "train_images", "batch_size", "lr", "weight_decay", "stages"):
        if getattr(args, key) is None:
            setattr(args, key, recipe.get(key))
    args.jit_compile = recipe["jit_compile"]
    staged_only = [flag for flag, value in (("--distill", args.distill), ("--init", args.init),
                                            ("--start-image", args.start_image), ("--pool", args.pool),
                                            ("--eval-every", args.eval_every),
                                            ("--curve", args.curve)) if value]
    if staged_only and not args.stages:
        p.error(f"{', '.join(staged_only)}: only the staged recipe (vit_ti8, or --stages) takes these")
    if args.distill == args.model:
        p.error(f"--distill {args.distill}: a model cannot be its own teacher")
    if args.distill_temperature is not None and (not args.distill or args.distill_temperature <= 0):
        p.error(f"--distill-temperature {args.distill_temperature:g}: needs --distill and a temperature above 0")
    if args.stages:
        final = args.stages[-1][0]
        if args.image_size not in (None, final):
            p.error(f"--image-size {args.image_size}: this recipe ends at {final} px (its last stage); "
                    f"change --stages instead")
        args.image_size, args.warmup_steps = final, recipe["warmup_steps"]
    else:
        args.image_size = args.image_size or 64
        args.val_every = recipe["val_every"]
        args.warmup_epochs = min(recipe["warmup_epochs"], max(args.epochs - 1, 0))
    if args.out is None:
        name = DEMO_WEIGHTS[args.model].name.replace("_64", f"_{args.image_size}")
        args.out = PRETRAINED_DIR / name
    if args.init == "demo":
        args.init = str(demo_weights_path(args.model, DEMO_IMAGE_SIZE))
    return args


# --- data ------------------------------------------------------------------------------------------


def make_datasets(args):
    """(train, held-out, training images): tf.data of (pixels (B, S, S, 3) float32 in [0, 255], labels (B,))."""
    import tensorflow as tf

    from poc.data.shapes import make_shapes

    start = time.time()
    x_train, y_train = make_shapes(args.train_images, args.image_size, seed=args.seed)
    x_val, y_val = make_shapes(args.val_images, args.image_size, seed=args.seed + 1)
    print(f"generated {len(x_train)} training + {len(x_val)} held-out shape images at {args.image_size} px "
          f"in {time.time() - start:.0f} s", flush=True)
    # Light augmentation: the generator already randomises colour, pose, scale and noise.
    augment = [] if args.no_augment else [
        keras.layers.RandomTranslation(0.08, 0.08, fill_mode="reflect", seed=args.seed),
        keras.layers.RandomZoom(0.1, fill_mode="reflect", seed=args.seed)]

    def prepare(images, labels):
        images = tf.cast(images, tf.float32)  # (B, S, S, 3)
        for layer in augment:
            images = layer(images, training=True)
        return tf.clip_by_value(images, 0.0, 255.0), labels

    train = (tf.data.Dataset.from_tensor_slices((x_train, y_train))
             .shuffle(len(x_train), seed=args.seed, reshuffle_each_iteration=True)
             .batch(args.batch_size, drop_remainder=True)
             .map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
             .prefetch(tf.data.AUTOTUNE))
    val = (tf.data.Dataset.from_tensor_slices((x_val, y_val)).batch(256)
           .map(lambda x, y: (tf.cast(x, tf.float32), y)).prefetch(tf.data.AUTOTUNE))
    return train, val, x_train


# --- training --------------------------------------------------------------------------------------


def optimizer(args, steps_per_epoch: int):
    """AdamW, linear warmup to the peak lr then cosine decay to zero; clipped gradients (ViTs need both)."""
    warmup = args.warmup_epochs * steps_per_epoch
    total = args.epochs * steps_per_epoch
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else args.lr, decay_steps=max(total - warmup, 1),
        warmup_target=args.lr if warmup else None, warmup_steps=warmup)
    return keras.optimizers.AdamW(schedule, weight_decay=args.weight_decay, global_clipnorm=1.0)


def compile_model(model, args) -> None:
    """Sparse cross-entropy on the 28 labels; XLA per the recipe."""
    scce = keras.losses.SparseCategoricalCrossentropy()
    model.compile(optimizer(args, args.steps), scce, metrics=["accuracy"], jit_compile=args.jit_compile)


class HeldOutAccuracy(keras.callbacks.Callback):
    """Prints the classifier's held-out accuracy every `every` epochs (0: never)."""

    def __init__(self, classifier: keras.Model, val, every: int):
        super().__init__()
        self.classifier, self.val, self.every = classifier, val, every

    def on_epoch_end(self, epoch, logs=None):
        if self.every and (epoch + 1) % self.every == 0:
            _, accuracy = self.classifier.evaluate(self.val, verbose=0)
            print(f"  held-out accuracy after epoch {epoch + 1}: {accuracy:.4f}", flush=True)


def refresh_batchnorm(model, images: np.ndarray, batch_size: int) -> int:
    """Re-estimates BatchNorm moving statistics as the plain mean over training batches; returns the count.

    Keras' MobileNetV2 uses momentum 0.999, so after a short run the moving averages still mix in statistics
    from early weights; a frozen backbone (phase 1 of every transfer run) would then see stale statistics.
    """
    backbone = model.get_layer("backbone")
    layers = [layer for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization)]
    if not layers:
        return 0
    saved = [layer.momentum for layer in layers]
    order = np.random.default_rng(0).permutation(len(images))
    for k in range(min(BN_REFRESH_BATCHES, len(images) // batch_size)):
        for layer in layers:  # momentum k/(k+1): the running value becomes the mean of batches 0..k
            layer.momentum = k / (k + 1)
        batch = images[order[k * batch_size:(k + 1) * batch_size]].astype(np.float32)
        model(batch, training=True)
    for layer, momentum in zip(layers, saved):
        layer.momentum = momentum
    return len(layers)


def save_backbone(model, name: str, out: Path) -> Path:
    """Writes the backbone (Keras weights for CNNs, a head-less Google .npz (float16) for ViTs) and, beside it,
    the classifier's head (`.head.npz`, float32)."""
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
    os.chmod(tmp, 0o644)  # mkstemp creates 0600
    os.replace(tmp, out)
    save_head(out, *(keras.ops.convert_to_numpy(w) for w in model.get_layer("head").weights))
    return out


# --- staged training on a stream of fresh images (the demo ViT) ---------------------------------------------

CHUNK_BATCHES = 16  # batches generated per call of the shapes generator
CURVE_COLUMNS = ("run", "stage", "image_size", "step", "images", "held_out_accuracy", "train_loss", "seconds",
                 "eval_seconds")


def demo_classifier(name: str, backbone: str | Path, num_classes: int, size: int = DEMO_IMAGE_SIZE):
    """`build(name, C, size, backbone)` with the head saved beside the backbone file (`load_head`)."""
    from poc.models.builders import build

    model = build(name, num_classes, size, str(backbone))
    model.get_layer("head").set_weights(list(load_head(backbone)))
    return model


def held_out_accuracy(classifier, images: np.ndarray, labels: np.ndarray) -> float:
    """Share of `images` (N, S, S, 3) whose argmax class is the label; batches of 256, inference mode."""
    probs = classifier.predict(images.astype(np.float32), batch_size=256, verbose=0)  # (N, C)
    return float(np.mean(np.argmax(probs, axis=-1) == labels))


def teacher_probabilities(teacher, images: np.ndarray) -> np.ndarray:
    """The teacher's class probabilities for each image (N, S, S, 3): (N, C) float32."""
    probs = [teacher.predict_on_batch(images[i:i + 256].astype(np.float32)) for i in range(0, len(images), 256)]
    return np.concatenate(probs).astype(np.float32)


def soften(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(logits / T) from the probabilities softmax(logits) (N, C): the log recovers the logits up to a
    per-image constant, which the softmax removes. Probabilities that underflowed to 0 count as 1e-30."""
    scaled = np.log(np.clip(probs.astype(np.float64), 1e-30, 1.0)) / temperature  # (N, C)
    scaled -= scaled.max(axis=-1, keepdims=True)
    soft = np.exp(scaled)
    return (soft / soft.sum(axis=-1, keepdims=True)).astype(np.float32)


def teacher_targets(teacher, images: np.ndarray, temperature: float | None) -> np.ndarray:
    """What the distillation head learns: the teacher's argmax (N,) int32, or with a temperature its softened
    probabilities (N, C) float32."""
    probs = teacher_probabilities(teacher, images)
    if temperature is None:
        return np.argmax(probs, axis=-1).astype(np.int32)
    return soften(probs, temperature)


def fresh_stream(args, size: int, steps: int, start: int, teacher=None):
    """tf.data of `steps` batches (pixels (B, S, S, 3) float32 in [0, 255], labels (B,)): training images
    `start` .. of the seed's endless sequence, so no image repeats across steps or stages. With a teacher the
    labels are a pair (true (B,), the teacher's argmax (B,)); the teacher sees the same images, drawn from the
    same random draws at its own size (64 px). With `--distill-temperature` the teacher's part is its softened
    probabilities (B, C) instead of its argmax."""
    import tensorflow as tf

    from poc.data.shapes import make_shapes

    pool = _Pool(args, size, args.start_image) if args.pool else None  # the same images in every stage

    def batches():
        for first in range(0, steps, CHUNK_BATCHES):
            count, index = min(CHUNK_BATCHES, steps - first) * args.batch_size, start + first * args.batch_size
            if pool is not None:
                images, labels = pool.draw(count)
            else:
                images, labels = make_shapes(count, size, seed=args.seed, start=index)
            if teacher is not None:  # a pool's teacher labels the augmented view the student sees
                if size == DEMO_IMAGE_SIZE:
                    seen = images
                elif pool is not None:
                    seen = keras.ops.convert_to_numpy(keras.ops.image.resize(
                        images.astype(np.float32), (DEMO_IMAGE_SIZE, DEMO_IMAGE_SIZE)))
                else:
                    seen = make_shapes(count, DEMO_IMAGE_SIZE, args.seed, index)[0]
                taught = teacher_targets(teacher, seen, args.distill_temperature)
            for b in range(count // args.batch_size):
                part = slice(b * args.batch_size, (b + 1) * args.batch_size)
                pixels = images[part].astype(np.float32)
                yield (pixels, (labels[part], taught[part])) if teacher is not None else (pixels, labels[part])

    pixels = tf.TensorSpec((args.batch_size, size, size, 3), tf.float32)
    labels = tf.TensorSpec((args.batch_size,), tf.int32)
    if teacher is None:
        signature = (pixels, labels)
    elif args.distill_temperature is None:
        signature = (pixels, (labels, labels))
    else:
        soft = tf.TensorSpec((args.batch_size, teacher.output_shape[-1]), tf.float32)
        signature = (pixels, (labels, soft))
    return tf.data.Dataset.from_generator(batches, output_signature=signature).prefetch(2)


class _Pool:
    """`--pool N`: a finite training set, images `start` .. `start + N - 1` of the seed's sequence, drawn in a new
    shuffled order each pass, each draw shifted and zoomed at random (RandomTranslation 0.1, RandomZoom 0.3): the
    regime DeiT's distillation was made for (few images, augmented views whose true label may no longer hold),
    unlike the endless stream of fresh, correctly labelled images."""

    def __init__(self, args, size: int, start: int):
        from poc.data.shapes import make_shapes

        self.images, self.labels = make_shapes(args.pool, size, seed=args.seed, start=start)
        self.rng, self.order = np.random.default_rng(args.seed), np.zeros(0, int)
        self.augment = [keras.layers.RandomTranslation(0.1, 0.1, fill_mode="reflect", seed=args.seed),
                        keras.layers.RandomZoom(0.3, fill_mode="reflect", seed=args.seed + 1)]

    def draw(self, count: int) -> tuple[np.ndarray, np.ndarray]:
        """(pixels (count, S, S, 3) float32 in [0, 255], labels (count,)) of the next `count` draws."""
        while len(self.order) < count:
            self.order = np.concatenate([self.order, self.rng.permutation(len(self.labels))])
        picked, self.order = self.order[:count], self.order[count:]
        pixels = self.images[picked].astype(np.float32)
        for layer in self.augment:
            pixels = keras.ops.convert_to_numpy(layer(pixels, training=True))
        return np.clip(pixels, 0.0, 255.0), self.labels[picked]


def distillation_trainer(model, num_classes: int, soft: bool = False) -> keras.Model:
    """DeiT's hard-label distillation (Touvron et al., arXiv 2012.12877), with a second head in place of the
    distillation token: `model` plus a softmax head `head_distill` on the same class-token features, which learns
    the teacher's argmax while `head` learns the true labels (loss 0.5 CE(true) + 0.5 CE(teacher)). It starts as
    a copy of `head`: continuing from trained weights, a random second head would first send large gradients
    through the backbone (measured: 49% -> 43% held-out in 100 steps). Used only while pretraining: what is saved
    is `model`'s backbone and head, a standard ViT. `soft`: the second head gives logits (no softmax), which the
    soft distillation loss divides by the temperature."""
    features = model.get_layer("dropout").output  # (B, D)
    distill = keras.layers.Dense(num_classes, activation=None if soft else "softmax", dtype="float32",
                                 name="head_distill")
    taught = distill(features)  # (B, C)
    distill.set_weights(model.get_layer("head").get_weights())
    return keras.Model(model.input, [model.output, taught], name="distillation_trainer")  # (B, C), (B, C)


def soft_distillation_loss(temperature: float):
    """DeiT's soft distillation term: T^2 KL(teacher_T || softmax(student logits / T)) per image, with
    teacher_T the teacher's probabilities softened by T (Hinton et al., arXiv 1503.02531: T^2 keeps the
    gradients' scale as T grows)."""
    def loss(softened, logits):  # (B, C) float32, (B, C)
        log_student = keras.ops.log_softmax(keras.ops.cast(logits, "float32") / temperature, axis=-1)
        log_teacher = keras.ops.log(keras.ops.clip(softened, 1e-12, 1.0))
        return temperature ** 2 * keras.ops.sum(softened * (log_teacher - log_student), axis=-1)  # (B,)
    return loss


def compile_stage(trainer, args, steps: int, lr: float, distilled: bool) -> int:
    """AdamW warming up then decaying to zero over the stage, clipped gradients; returns the warmup steps.
    Distilled: 0.5 CE(true labels) + 0.5 the distillation term (hard: CE(teacher's argmax); soft: DeiT's KL)."""
    warmup = min(args.warmup_steps, steps // 5)
    schedule = keras.optimizers.schedules.CosineDecay(0.0, max(steps - warmup, 1), warmup_target=lr,
                                                      warmup_steps=warmup)
    scce = keras.losses.SparseCategoricalCrossentropy()
    temperature = args.distill_temperature
    taught = scce if temperature is None else soft_distillation_loss(temperature)
    agreement = "accuracy" if temperature is None else "categorical_accuracy"  # the teacher's argmax, matched
    loss, weights, metrics = (([scce, taught], [0.5, 0.5], [["accuracy"], [agreement]]) if distilled
                              else (scce, None, ["accuracy"]))
    trainer.compile(keras.optimizers.AdamW(schedule, weight_decay=args.weight_decay, global_clipnorm=1.0), loss,
                    loss_weights=weights, metrics=metrics, jit_compile=args.jit_compile)
    return warmup


class StreamProgress(keras.callbacks.Callback):
    """Every `every` steps of a one-pass stream and at its end: the classifier's accuracy on the held-out
    images, printed and (with `--curve`) appended to the curve CSV; `progress` carries the count across stages."""

    def __init__(self, classifier, held_out, every: int, stage: int, args, progress: dict):
        super().__init__()
        self.classifier, self.held_out, self.every, self.stage = classifier, held_out, every, stage
        self.args, self.progress, self.accuracy, self.last = args, progress, None, 0

    def on_train_begin(self, logs=None):
        if self.stage == 1 and self.args.init:  # the curve starts from the weights it continues
            self.record(0, None)

    def on_train_batch_end(self, batch, logs=None):
        if (batch + 1) % self.every == 0:
            self.record(batch + 1, (logs or {}).get("loss"))

    def on_train_end(self, logs=None):
        if self.last != self.params["steps"]:
            self.record(self.params["steps"], (logs or {}).get("loss"))
        self.progress["steps"] += self.params["steps"]

    def record(self, step: int, loss) -> None:
        started = time.time()
        self.accuracy, self.last = held_out_accuracy(self.classifier, *self.held_out), step
        self.progress["eval_seconds"] += time.time() - started
        total, seconds = self.progress["steps"] + step, time.time() - self.progress["started"]
        size = self.held_out[0].shape[1]
        print(f"  stage {self.stage} step {step} ({size} px): loss {'-' if loss is None else f'{loss:.3f}'} "
              f"held-out ({len(self.held_out[1])} images) {self.accuracy:.4f} [{seconds:.0f} s, of which "
              f"evaluation {self.progress['eval_seconds']:.0f} s]", flush=True)
        if self.args.curve:
            self.args.curve.parent.mkdir(parents=True, exist_ok=True)
            new = not self.args.curve.exists()
            run = distillation_name(self.args)
            row = (run, self.stage, size, total, total * self.args.batch_size, f"{self.accuracy:.4f}",
                   "" if loss is None else f"{loss:.4f}", f"{seconds:.0f}", f"{self.progress['eval_seconds']:.0f}")
            with open(self.args.curve, "a") as f:
                f.write((",".join(CURVE_COLUMNS) + "\n" if new else "") + ",".join(map(str, row)) + "\n")


def distillation_name(args) -> str:
    """The curve's `run` column: no_distill, distill_TEACHER (hard labels) or distill_softT_TEACHER."""
    if not args.distill:
        return "no_distill"
    temperature = args.distill_temperature
    return f"distill_{args.distill}" if temperature is None else f"distill_soft{temperature:g}_{args.distill}"


def pretrain_stages(args, num_classes: int):
    """Trains `args.model` stage by stage, from scratch or from `--init`; each stage starts from the previous
    one's weights (backbone and head, position embedding resized to the new grid). With `--distill`, a frozen
    teacher labels every training image as well. Returns (classifier at the last size, held-out accuracy, fit
    seconds)."""
    from poc.data.shapes import make_shapes
    from poc.models.builders import build
    from poc.models.vit_checkpoint import export_vit_checkpoint

    teacher = None
    if args.distill:
        teacher = demo_classifier(args.distill, DEMO_WEIGHTS[args.distill], num_classes)
        teacher.trainable = False
        teacher.compile(jit_compile=False)  # inference mode; XLA slows MobileNetV2 (see RECIPES)
        how = ("hard labels" if args.distill_temperature is None
               else f"soft targets at temperature {args.distill_temperature:g}")
        print(f"teacher: the committed {args.distill} with its head, frozen, at {DEMO_IMAGE_SIZE} px "
              f"({how}, DeiT)", flush=True)
    progress = {"steps": 0, "eval_seconds": 0.0, "started": time.time()}
    model, accuracy, fit_seconds, start, carry = None, 0.0, 0.0, args.start_image, None
    with tempfile.TemporaryDirectory() as tmp:
        for k, (size, steps, lr) in enumerate(args.stages):
            if k == 0 and args.init:
                model = demo_classifier(args.model, args.init, num_classes, size)
            else:
                model = build(args.model, num_classes, size, carry or "none")
            model.trainable = True
            trainer = (distillation_trainer(model, num_classes, soft=args.distill_temperature is not None)
                       if teacher else model)
            warmup = compile_stage(trainer, args, steps, lr, distilled=teacher is not None)
            held_out = make_shapes(args.val_images, size, seed=args.seed + 1)
            source = "from the previous stage" if carry else f"from {args.init}" if args.init else "from scratch"
            images = (f"a pool of {args.pool} images {args.start_image}.., shifted and zoomed at random"
                      if args.pool else f"fresh images {start}..")
            print(f"stage {k + 1}/{len(args.stages)}: {steps} steps x batch {args.batch_size} of {images} "
                  f"at {size} px, AdamW peak lr {lr:g} (warmup {warmup} steps, cosine), weight decay "
                  f"{args.weight_decay:g}, {source}{', distilled' if teacher else ''}", flush=True)
            progress_callback = StreamProgress(model, held_out, args.eval_every or max(steps // 5, 1), k + 1, args,
                                               progress)
            fit_start = time.time()
            trainer.fit(fresh_stream(args, size, steps, start, teacher), epochs=1, steps_per_epoch=steps, verbose=0,
                        callbacks=[progress_callback])
            fit_seconds += time.time() - fit_start
            start += steps * args.batch_size
            accuracy = progress_callback.accuracy
            print(f"held-out accuracy after stage {k + 1} at {size} px: {accuracy:.4f}", flush=True)
            carry = str(Path(tmp) / f"stage{k}.npz")
            export_vit_checkpoint(model.get_layer("backbone"), carry, head=model.get_layer("head"))
            if k + 1 < len(args.stages):  # a usable file early; the position embedding is resized on loading
                print(f"  stage {k + 1} backbone saved to {save_backbone(model, args.model, args.out)}", flush=True)
    return model, accuracy, fit_seconds


def pretrain_epochs(args, num_classes: int):
    """The fixed-set recipe (the CNN, ViT-Ti/16): epochs over one generated training set.
    Returns (classifier, held-out accuracy, fit seconds)."""
    from poc.models.builders import build

    train, val, x_train = make_datasets(args)
    args.steps = args.train_images // args.batch_size
    model = build(args.model, num_classes, args.image_size, "none")
    model.trainable = True
    compile_model(model, args)
    print(f"pretraining {args.model} at {args.image_size} px on {num_classes} shape classes: "
          f"{args.epochs} epochs x {args.steps} steps, batch {args.batch_size}, AdamW lr {args.lr:g} "
          f"(warmup {args.warmup_epochs} epochs, cosine), weight decay {args.weight_decay:g}, "
          f"{model.count_params():,} parameters", flush=True)
    fit_start = time.time()
    model.fit(train, epochs=args.epochs, shuffle=False, verbose=2,  # the dataset shuffles itself
              callbacks=[HeldOutAccuracy(model, val, args.val_every)])
    fit_seconds = time.time() - fit_start
    _, accuracy = model.evaluate(val, verbose=0)
    print(f"held-out accuracy after training: {accuracy:.4f}", flush=True)
    if refresh_batchnorm(model, x_train, args.batch_size):
        _, accuracy = model.evaluate(val, verbose=0)
        print(f"held-out accuracy after refreshing BatchNorm statistics: {accuracy:.4f}", flush=True)
    return model, accuracy, fit_seconds


# --- the committed weights: their head and their held-out accuracy --------------------------------------------


def held_out_set(args) -> tuple[np.ndarray, np.ndarray]:
    """The first `--val-images` images of seed + 1 (the held-out set the pretraining measures) at
    `args.image_size`, and their labels; announced with the file they measure."""
    from poc.data.shapes import make_shapes

    images, labels = make_shapes(args.val_images, args.image_size, seed=args.seed + 1)
    print(f"{args.model}: {args.out} with its head, {len(labels)} held-out images (seed {args.seed + 1}) at "
          f"{args.image_size} px", flush=True)
    return images, labels


def evaluate(args) -> float:
    """Held-out accuracy of the backbone file `args.out` with the head beside it."""
    from poc.data.shapes import SHAPE_CLASSES

    images, labels = held_out_set(args)
    return held_out_accuracy(demo_classifier(args.model, args.out, len(SHAPE_CLASSES), args.image_size), images,
                             labels)


def _epochs_of(features: np.ndarray, labels: np.ndarray, seed: int):
    """HEAD_EPOCHS passes over (features, labels) in HEAD_BATCH batches, reshuffled every pass, as one stream:
    Keras' fit pays ~0.13 s of callbacks and iterator set-up per epoch on a 2-core CPU, which for a linear
    head is most of the time (100 epochs of 56 images: 14.6 s as 100 fit epochs, 2.1 s as one stream)."""
    import tensorflow as tf

    passes = tf.data.Dataset.from_tensor_slices((features, labels))
    passes = passes.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
    return passes.batch(HEAD_BATCH).repeat(HEAD_EPOCHS)


def fit_head(args) -> float:
    """Trains the 28-class head on the frozen backbone file `args.out`, as the pretraining trains it (Dense after
    the classifier's dropout, softmax cross-entropy), on the features of `args.head_images` training images,
    writes it beside the backbone and returns its held-out accuracy (what `--evaluate` prints for the two files,
    read here from the same frozen features: no second build of the model). Dropout matters: a head fitted
    without it (a plain logistic regression) reads the same accuracy but is so sensitive to dropped features that
    continuing the pretraining from it first loses ten points."""
    from poc.data.shapes import SHAPE_CLASSES, make_shapes
    from poc.models.builders import DROPOUT, build

    model = build(args.model, len(SHAPE_CLASSES), args.image_size, str(args.out))
    features_model = keras.Model(model.input, model.get_layer("dropout").input)  # pixels -> (B, D)
    images, labels = make_shapes(args.head_images, args.image_size, seed=args.seed)
    features = features_model.predict(images.astype(np.float32), batch_size=256, verbose=0)  # (N, D)
    head = keras.Sequential([keras.Input(features.shape[1:]), keras.layers.Dropout(DROPOUT),
                             keras.layers.Dense(len(SHAPE_CLASSES), name="head")])  # logits (B, C)
    steps = HEAD_EPOCHS * -(-len(labels) // HEAD_BATCH)  # every epoch's batches, the last one partial
    head.compile(keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(1e-3, steps)),
                 keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    head.fit(_epochs_of(features, labels, args.seed), epochs=1, steps_per_epoch=steps, verbose=0)
    kernel, bias = (keras.ops.convert_to_numpy(w) for w in head.get_layer("head").weights)  # (D, C), (C,)
    path = save_head(args.out, kernel, bias)
    print(f"head trained on {len(labels)} training images' frozen features ({HEAD_EPOCHS} epochs); written to "
          f"{path}", flush=True)
    images, labels = held_out_set(args)
    features = features_model.predict(images.astype(np.float32), batch_size=256, verbose=0)  # (N, D)
    return float(np.mean(np.argmax(features @ kernel + bias, axis=-1) == labels))  # dropout: identity here


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    try:
        if args.evaluate or args.fit_head:
            print(f"held-out accuracy: {fit_head(args) if args.fit_head else evaluate(args):.4f}", flush=True)
            return 0
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from poc.data.shapes import SHAPE_CLASSES

    started = time.time()
    if args.stages:
        model, accuracy, fit_seconds = pretrain_stages(args, len(SHAPE_CLASSES))
    else:
        model, accuracy, fit_seconds = pretrain_epochs(args, len(SHAPE_CLASSES))
    out = save_backbone(model, args.model, args.out)
    print(f"RESULT model={args.model} size={args.image_size} classes={len(SHAPE_CLASSES)} "
          f"held_out_accuracy={accuracy:.4f} chance={1 / len(SHAPE_CLASSES):.4f} fit_seconds={fit_seconds:.0f} "
          f"total_seconds={time.time() - started:.0f} file={out} bytes={out.stat().st_size}", flush=True)
    return 0

