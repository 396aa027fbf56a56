"""The project's own small demo backbones (`--weights demo`): pretrained offline on generated shapes.

They are NOT ImageNet weights. `python -m poc pretrain` trains each backbone on the shapes-and-textures task
of `poc.data.shapes` (a separate task, none of the cartoon classes) and writes the files listed here; the
demo then transfers from them to the cartoon classes. See poc/pretrained/README.md for the commands, the
measured accuracies and the training times.

Each backbone file has its 28-class shapes head beside it (`demo_<model>_64.head.npz`: `kernel` (D, 28) and
`bias` (28,)), so `python -m poc pretrain --model NAME --evaluate` can re-measure the committed weights and the
CNN can serve as the demo ViT's distillation teacher.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from poc.errors import UserError

PRETRAINED_DIR = Path(__file__).resolve().parent.parent / "pretrained"
DEMO_IMAGE_SIZE = 64  # every demo backbone is pretrained at this input size

# Model name -> backbone weights: CNN as Keras `.weights.h5` of the backbone, ViT as a Google-layout `.npz`
# without head (float16, position embedding float32).
DEMO_WEIGHTS: dict[str, Path] = {
    "mobilenet_v2": PRETRAINED_DIR / f"demo_mobilenet_v2_{DEMO_IMAGE_SIZE}.weights.h5",
    "vit_ti16": PRETRAINED_DIR / f"demo_vit_ti16_{DEMO_IMAGE_SIZE}.npz",
    "vit_ti8": PRETRAINED_DIR / f"demo_vit_ti8_{DEMO_IMAGE_SIZE}.npz",
}


def head_path(backbone: str | Path) -> Path:
    """The head file beside a backbone file: demo_x_64.weights.h5 or demo_x_64.npz -> demo_x_64.head.npz."""
    backbone = Path(backbone)
    stem = backbone.name
    for suffix in (".weights.h5", ".npz"):
        if stem.endswith(suffix):
            stem = stem[:-len(suffix)]
            break
    return backbone.with_name(f"{stem}.head.npz")


def load_head(backbone: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """The shapes head saved beside `backbone`: (kernel (D, C), bias (C,)) float32; UserError when it is missing
    or malformed."""
    path = head_path(backbone)
    if not path.is_file():
        raise UserError(f"{path} is missing: the head of {Path(backbone).name}; recreate it with "
                        f"python -m poc pretrain --model NAME --fit-head (trains it on the frozen backbone)")
    with np.load(path) as npz:
        if not {"kernel", "bias"} <= set(npz.files):
            raise UserError(f"{path} holds {sorted(npz.files)}; a head file holds 'kernel' and 'bias'")
        kernel, bias = npz["kernel"].astype(np.float32), npz["bias"].astype(np.float32)
    if kernel.ndim != 2 or bias.shape != (kernel.shape[1],):
        raise UserError(f"{path}: kernel {kernel.shape} and bias {bias.shape} do not form a Dense head "
                        f"(expected (D, C) and (C,))")
    return kernel, bias


def save_head(backbone: str | Path, kernel: np.ndarray, bias: np.ndarray) -> Path:
    """Writes the head beside `backbone` (float32, a few KB); returns its path."""
    path = head_path(backbone)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        np.savez(f, kernel=np.asarray(kernel, np.float32), bias=np.asarray(bias, np.float32))
    return path


def _available() -> str:
    return ", ".join(f"{name} at {DEMO_IMAGE_SIZE} px" for name in DEMO_WEIGHTS)


def demo_weights_path(name: str, image_size: int) -> Path:
    """The demo backbone file for `name` at `image_size` px; UserError naming what exists when there is none."""
    if name not in DEMO_WEIGHTS or image_size != DEMO_IMAGE_SIZE:
        raise UserError(f"--weights demo: there are no demo weights for {name} at {image_size} px; demo weights "
                        f"exist for {_available()}. Use one of those, or --weights none / imagenet / a path")
    path = DEMO_WEIGHTS[name]
    if not path.is_file():
        raise UserError(f"--weights demo: {path} is missing; recreate it with "
                        f"python -m poc pretrain --model {name} --image-size {image_size}")
    return path
