"""The project's own small demo backbones (`--weights demo`): pretrained offline on generated shapes.

They are NOT ImageNet weights. `python -m poc pretrain` trains each backbone on the shapes-and-textures task
of `poc.data.shapes` (a separate task, none of the cartoon classes) and writes the files listed here; the
demo then transfers from them to the cartoon classes. See poc/pretrained/README.md for the commands, the
measured accuracies and the training times.
"""

from __future__ import annotations

from pathlib import Path

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
