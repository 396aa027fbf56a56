"""Port of Google's ViT `.npz` checkpoints in the vit_jax layout (arXiv 2010.11929, and the AugReg files).

Only that layout: big_vision's checkpoints name their blocks differently (`MlpBlock_0`, ...) and are refused with
the list of unknown keys, like any other file whose keys do not match.

Keras 3 variable names cannot contain '/', so checkpoint keys map to model variables through one explicit
table (`checkpoint_key_table`). As in nanoGPT's `from_pretrained`, the loader refuses to load anything
unless every key is used and every shape matches; the only tolerated difference is the position-embedding
grid, which is resized bilinearly as in the reference fine-tuning code (class token kept).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from urllib.parse import urlparse

import keras
import numpy as np
import scipy.ndimage

from poc.errors import UserError
from poc.models.vit import block_names

POSEMB_KEY = "Transformer/posembed_input/pos_embedding"
HEAD_KEYS = ("head/kernel", "head/bias")
MAX_LISTED = 8  # keys shown per category in an error message


def checkpoint_key_table(backbone: keras.Model) -> dict[str, keras.Variable]:
    """Checkpoint key -> backbone variable, for every weight of a `build_vit_backbone` model."""
    table = {
        "embedding/kernel": backbone.get_layer("embedding").kernel,  # (p, p, 3, D)
        "embedding/bias": backbone.get_layer("embedding").bias,  # (D,)
        "cls": backbone.get_layer("cls").cls,  # (1, 1, D)
        POSEMB_KEY: backbone.get_layer("posembed_input").pos_embedding,  # (1, T, D)
    }
    for name in block_names(backbone):
        block = backbone.get_layer(name)
        prefix = f"Transformer/{name}"
        for ln in ("LayerNorm_0", "LayerNorm_2"):
            table[f"{prefix}/{ln}/scale"] = block.get_layer(ln).gamma  # (D,)
            table[f"{prefix}/{ln}/bias"] = block.get_layer(ln).beta  # (D,)
        mha = block.get_layer("MultiHeadDotProductAttention_1")
        for key, dense in (
            ("query", mha.query_dense),  # kernel (D, H, D/H), bias (H, D/H)
            ("key", mha.key_dense),
            ("value", mha.value_dense),
            ("out", mha.output_dense),  # kernel (H, D/H, D), bias (D,)
        ):
            table[f"{prefix}/MultiHeadDotProductAttention_1/{key}/kernel"] = dense.kernel
            table[f"{prefix}/MultiHeadDotProductAttention_1/{key}/bias"] = dense.bias
        mlp = block.get_layer("MlpBlock_3")
        for dense in ("Dense_0", "Dense_1"):
            table[f"{prefix}/MlpBlock_3/{dense}/kernel"] = mlp.get_layer(dense).kernel  # (D, M) / (M, D)
            table[f"{prefix}/MlpBlock_3/{dense}/bias"] = mlp.get_layer(dense).bias
    norm = backbone.get_layer("encoder_norm")
    table["Transformer/encoder_norm/scale"] = norm.gamma
    table["Transformer/encoder_norm/bias"] = norm.beta
    return table


def _head_table(head: keras.layers.Dense) -> dict[str, keras.Variable]:
    if not head.built:
        raise ValueError(f"head layer '{head.name}' is not built yet; build the classifier before loading")
    return {"head/kernel": head.kernel, "head/bias": head.bias}  # (D, C), (C,)


def export_vit_checkpoint(backbone: keras.Model, path: str | Path, head: keras.layers.Dense | None = None) -> Path:
    """Writes the backbone's (and optionally the head's) weights as a Google-layout `.npz`; returns the path."""
    table = checkpoint_key_table(backbone) | (_head_table(head) if head is not None else {})
    arrays = {key: keras.ops.convert_to_numpy(var.value).astype(np.float32) for key, var in table.items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "wb") as f:  # a file object keeps np.savez from appending '.npz'
        np.savez(f, **arrays)
    os.replace(tmp, path)
    return path


def _resolve(source: str | Path, cache_dir: str | Path | None) -> Path:
    """A local path, or an http(s) URL downloaded once into the Keras cache."""
    text = str(source)
    if urlparse(text).scheme in ("http", "https"):
        fname = Path(urlparse(text).path).name or "vit_checkpoint.npz"
        try:
            local = keras.utils.get_file(
                fname=fname, origin=text, cache_subdir="vit_checkpoints", cache_dir=cache_dir
            )
        except Exception as exc:  # urllib / OS errors arrive wrapped in a bare Exception
            raise UserError(
                f"could not download the ViT checkpoint {text} ({exc}); check the network connection, "
                "or download the .npz elsewhere and pass its local path"
            ) from exc
        return Path(local)
    path = Path(source)
    if not path.is_file():
        raise UserError(f"ViT checkpoint '{path}' does not exist; pass a local .npz path or an http(s) URL")
    return path


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except Exception as exc:  # zipfile.BadZipFile, ValueError (pickled object arrays), OSError
        raise UserError(f"'{path}' is not a readable .npz checkpoint ({exc})") from exc
    return arrays


def _pop_identity_pre_logits(arrays: dict[str, np.ndarray]) -> None:
    """Drops an identity `pre_logits` layer; any other one stays and is reported as unsupported."""
    kernel, bias = arrays.get("pre_logits/kernel"), arrays.get("pre_logits/bias")
    if kernel is None or bias is None or kernel.ndim != 2 or kernel.shape[0] != kernel.shape[1]:
        return
    if np.array_equal(kernel, np.eye(kernel.shape[0])) and not np.any(bias):
        del arrays["pre_logits/kernel"], arrays["pre_logits/bias"]


def _grid(tokens: int) -> int | None:
    """Side of the square patch grid for T tokens (class token + g*g patches), None if not square."""
    g = int(round(np.sqrt(tokens - 1)))
    return g if tokens > 1 and g * g == tokens - 1 else None


def resize_position_embedding(posemb: np.ndarray, tokens: int) -> np.ndarray:
    """(1, T_old, D) -> (1, tokens, D): class token kept, g_old x g_old grid zoomed bilinearly to g x g.

    Same as the reference fine-tuning code (scipy.ndimage.zoom, order=1; corners aligned).
    """
    old, new = _grid(posemb.shape[1]), _grid(tokens)
    if old is None or new is None:
        raise ValueError(f"position embedding with {posemb.shape[1]} tokens or target {tokens} is not 1 + g*g")
    cls, grid = posemb[:, :1], posemb[0, 1:].reshape(old, old, -1)  # (1, 1, D), (g_old, g_old, D)
    grid = scipy.ndimage.zoom(grid, (new / old, new / old, 1), order=1)  # (g, g, D)
    return np.concatenate([cls, grid.reshape(1, new * new, -1)], axis=1)  # (1, 1 + g*g, D)


def _listing(title: str, items: list[str]) -> str:
    shown = items[:MAX_LISTED]
    more = f", ... and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else ""
    return f"{title} ({len(items)}): " + ", ".join(shown) + more


def _mismatch_message(path: Path, missing: list[str], unexpected: list[str], misshaped: list[str]) -> str:
    parts = [f"ViT checkpoint '{path}' does not match the model"]
    if missing:
        parts.append(_listing("missing keys", missing))
    if unexpected:
        parts.append(_listing("unexpected keys", unexpected))
        if any(key.startswith("pre_logits/") for key in unexpected):
            parts.append(
                "a non-identity 'pre_logits' layer (ImageNet-21k representation layer) is not supported; "
                "use a fine-tuned checkpoint without it"
            )
    if misshaped:
        parts.append(_listing("mis-shaped keys (expected vs found)", misshaped))
    if unexpected or misshaped:
        parts.append("is the checkpoint for another ViT variant (patch size, width, depth)?")
    return "; ".join(parts)


def load_vit_checkpoint(
    backbone: keras.Model,
    source: str | Path,
    head: keras.layers.Dense | None = None,
    cache_dir: str | Path | None = None,
) -> dict:
    """Loads a Google ViT `.npz` (local path or http(s) URL) into `backbone` and, when it fits, `head`.

    Every backbone key must be present with the right shape and no other key may be left over, otherwise
    UserError lists the missing, unexpected and mis-shaped keys and nothing is assigned. A position
    embedding for another grid is resized. The head is loaded when `head` is given and its shapes match;
    otherwise it is skipped and the report says why.
    Returns {"loaded": n variables, "head_loaded": bool, "head_note": str | None,
    "posemb_resized": (old_grid, new_grid) or None}.
    """
    path = _resolve(source, cache_dir)
    arrays = _read_npz(path)
    _pop_identity_pre_logits(arrays)
    table = checkpoint_key_table(backbone)

    report = {"loaded": 0, "head_loaded": False, "head_note": None, "posemb_resized": None}
    posemb, want = arrays.get(POSEMB_KEY), tuple(table[POSEMB_KEY].shape)
    if posemb is not None and posemb.shape != want and posemb.ndim == 3 and posemb.shape[2] == want[2]:
        if _grid(posemb.shape[1]) is not None and _grid(want[1]) is not None:
            arrays[POSEMB_KEY] = resize_position_embedding(posemb, want[1])
            report["posemb_resized"] = (_grid(posemb.shape[1]), _grid(want[1]))

    head_arrays = {key: arrays.pop(key) for key in HEAD_KEYS if key in arrays}
    missing = [key for key in table if key not in arrays]
    unexpected = sorted(key for key in arrays if key not in table)
    misshaped = [
        f"{key} {tuple(var.shape)} vs {arrays[key].shape}"
        for key, var in table.items()
        if key in arrays and arrays[key].shape != tuple(var.shape)
    ]
    if missing or unexpected or misshaped:
        raise UserError(_mismatch_message(path, missing, unexpected, misshaped))

    assignments = [(var, arrays[key]) for key, var in table.items()]
    if head is not None:
        head_vars = _head_table(head)
        found = {key: value.shape for key, value in head_arrays.items()}
        expected = {key: tuple(var.shape) for key, var in head_vars.items()}
        if found == expected:
            assignments += [(var, head_arrays[key]) for key, var in head_vars.items()]
            report["head_loaded"] = True
        elif not head_arrays:
            report["head_note"] = "checkpoint has no head; the head keeps its initial weights"
        else:
            report["head_note"] = (
                f"checkpoint head {found.get('head/kernel')} does not fit the model's head "
                f"{expected['head/kernel']} (different class count); the head keeps its initial weights"
            )
    for var, value in assignments:
        var.assign(value.astype(var.dtype))
    report["loaded"] = len(table)
    return report
