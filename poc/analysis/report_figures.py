"""The report's pictures as base64 PNG data URIs: learning curves, confusion matrices, reliability diagrams, mean
explanation maps and test-image thumbnails. matplotlib on its Agg backend (no display); every figure is closed after it is encoded.
"""

from __future__ import annotations

import base64
import io

import numpy as np
import pandas as pd

TEXT_LIMIT = 30  # above this many classes a confusion matrix is drawn without its counts
THUMB_PX = 112


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _encode(fig) -> str:
    plt = _plt()
    try:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=96, bbox_inches="tight")
        return data_uri(buf.getvalue())
    finally:
        plt.close(fig)


def curves_png(history: pd.DataFrame) -> str:
    """Loss and accuracy per epoch, train solid and validation dashed; a dotted line where fine-tuning starts."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    boundary = history.loc[history["phase"] == "tl", "epoch"].max()
    for ax, metric in zip(axes, ("loss", "accuracy")):
        ax.plot(history["epoch"], history[metric], "-o", ms=3, label="train")
        ax.plot(history["epoch"], history[f"val_{metric}"], "--o", ms=3, label="validation")
        if pd.notna(boundary) and (history["phase"] == "ft").any():
            ax.axvline(boundary + 0.5, color="#888", ls=":", lw=1)
        ax.set_xlabel("epoch (global)")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    axes[0].legend()
    return _encode(fig)


def confusion_png(cm: pd.DataFrame, title: str) -> str:
    """Rows true class, columns predicted class, counts written in the cells up to TEXT_LIMIT classes."""
    plt = _plt()
    n = len(cm)
    side = min(max(4.5, 0.42 * n + 2), 16.0)
    fig, ax = plt.subplots(figsize=(side + 1, side))
    values = cm.to_numpy(dtype=float)
    image = ax.imshow(values, cmap="Blues")
    fig.colorbar(image, ax=ax, shrink=0.6, label="images")
    labels_size = 8 if n <= TEXT_LIMIT else 4
    ax.set_xticks(range(n), [str(c) for c in cm.columns], rotation=90, fontsize=labels_size)
    ax.set_yticks(range(n), [str(c) for c in cm.index], fontsize=labels_size)
    if n <= TEXT_LIMIT:
        peak = values.max() or 1.0
        for (i, j), count in np.ndenumerate(values):
            if count:
                ax.text(j, i, f"{count:.0f}", ha="center", va="center", fontsize=7,
                        color="white" if count > peak / 2 else "#222")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    return _encode(fig)


def reliability_png(result: dict, title: str) -> str:
    """Accuracy against mean confidence per bin (poc.analysis.calibration.calibration), before and, when a temperature
    was fitted, after temperature scaling; bar widths are the bins, the diagonal is perfect calibration."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    table = result["table"]
    width = float(table["bin_high"].iloc[0] - table["bin_low"].iloc[0])
    filled = table[table["count"] > 0]
    ax.bar(filled["bin_low"], filled["accuracy"], width=width, align="edge", color="#9ecae1", edgecolor="#3182bd",
           label=f"test accuracy per bin (ECE {result['ece']:.3f})")
    if result.get("calibrated") is not None:
        after = result["calibrated"][result["calibrated"]["count"] > 0]
        ax.plot(after["confidence"], after["accuracy"], "o-", color="#e6550d", ms=4,
                label=f"after temperature {result['temperature']:.2f} (ECE {result['ece_calibrated']:.3f})")
    ax.plot([0, 1], [0, 1], ls="--", color="#555", lw=1, label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel(f"confidence ({result['bins']} equal-width bins)")
    ax.set_ylabel("accuracy")
    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=7, loc="upper left")
    return _encode(fig)


def heatmap_png(mean_map: np.ndarray, title: str) -> str:
    """A mean explanation map (h, w) at its native grid, one square per cell, scaled to its own peak."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(3.2, 3.0))
    peak = float(np.max(mean_map)) or 1.0
    image = ax.imshow(mean_map / peak, cmap="jet", vmin=0, vmax=1, interpolation="nearest")
    fig.colorbar(image, ax=ax, shrink=0.7)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=8)
    return _encode(fig)


def thumbnail_uri(path: str, max_side: int = THUMB_PX) -> str | None:
    """A test image as a small inline JPEG; None when the file is missing or not a readable image."""
    from poc.data.images import ImageRejected, open_rgb

    try:
        image = open_rgb(path)
    except (ImageRejected, OSError, ValueError):
        return None
    image.thumbnail((max_side, max_side))
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=85)
    return data_uri(buf.getvalue(), "image/jpeg")
