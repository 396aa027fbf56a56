"""Do a CNN and a ViT look at the same part of an image? Grad-CAM against attention rollout, image by image.

For each test image both runs explain (eval/<stage>/explanations.npz, rows aligned with predictions.csv), both
maps are resized to one grid and reduced to their top-20% cells; the agreement is the IoU of those two regions
(1: the same cells, 0: disjoint; two random regions of 20% overlap with an IoU of about 0.11). Rollout
(arXiv 2005.00928) is class-agnostic: it says where the ViT's attention flows, whatever it predicts, while
Grad-CAM (arXiv 1610.02391) explains the CNN's predicted class. Pure: RunDirs in, DataFrames out.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from PIL import Image

from poc.runs import store
from poc.runs.store import RunDir
from poc.analysis.compare import run_fingerprint
from poc.runs.status import final_stage_of
from poc.errors import UserError

TOP_SHARE = 0.2  # the share of a map's cells that forms its region
METHODS = ("gradcam", "attention_rollout")


def resize_map(heatmap: np.ndarray, grid: int) -> np.ndarray:
    """A 2-D map resized to (grid, grid) by bilinear interpolation (cell centres, as an image is resized)."""
    heatmap = np.asarray(heatmap, dtype=np.float32)
    if heatmap.shape == (grid, grid):
        return heatmap
    return np.asarray(Image.fromarray(heatmap).resize((grid, grid), Image.Resampling.BILINEAR), np.float32)


def top_region(heatmap: np.ndarray, share: float = TOP_SHARE) -> np.ndarray | None:
    """Boolean mask of the round(share * cells) highest cells (at least one; ties in row-major order); None for
    a constant or non-finite map, which has no top region."""
    flat = np.asarray(heatmap, dtype=np.float64).ravel()
    if not np.isfinite(flat).all() or flat.max() == flat.min():
        return None
    k = max(1, int(round(share * flat.size)))
    mask = np.zeros(flat.size, bool)
    mask[np.argsort(-flat, kind="stable")[:k]] = True
    return mask.reshape(np.shape(heatmap))


def region_iou(map_a: np.ndarray, map_b: np.ndarray, share: float = TOP_SHARE, grid: int | None = None) -> float:
    """IoU of the top-`share` regions of two maps on a common (grid, grid) grid (default: the finer of the two
    maps' sides); NaN when either map is constant (e.g. a Grad-CAM that ReLU zeroed)."""
    grid = grid or max(*np.shape(map_a), *np.shape(map_b))
    region_a, region_b = (top_region(resize_map(m, grid), share) for m in (map_a, map_b))
    if region_a is None or region_b is None:
        return float("nan")
    return float((region_a & region_b).sum() / (region_a | region_b).sum())


def per_class(per_image: pd.DataFrame) -> pd.DataFrame:
    """class, mean_iou, n (images with an IoU), constant (images left out: a map without a top region);
    classes sorted by name."""
    valid = per_image["iou"].notna()
    grouped = per_image.assign(valid=valid).groupby("label", sort=True)
    return pd.DataFrame({
        "class": grouped.size().index.astype(str),
        "mean_iou": grouped["iou"].mean().to_numpy(float),
        "n": grouped["valid"].sum().to_numpy(int),
        "constant": (grouped.size() - grouped["valid"].sum()).to_numpy(int),
    })


def _stage(rd: RunDir, stage: str | None) -> str:
    return stage or final_stage_of(rd, store.read_json(rd.run_json) or {}, needs="explanations") or "tl"


def _explained(rd: RunDir, stage: str) -> tuple[pd.DataFrame, np.ndarray, str]:
    """(predictions, maps (N, h, w), method) of one run's stage, checked to be aligned row for row."""
    frame = store.read_predictions(rd, stage)
    explanations = store.read_explanations(rd, stage)
    if frame is None or explanations is None:
        raise UserError(f"run {rd.id} has no readable eval/{stage}/predictions.csv and explanations.npz; "
                        f"recompute them: python -m poc evaluate {rd.id}")
    maps, method = explanations
    if len(maps) != len(frame) or maps.ndim != 3:
        raise UserError(f"run {rd.id}: eval/{stage}/explanations.npz holds {len(maps)} maps for {len(frame)} "
                        f"predictions; recompute them: python -m poc evaluate {rd.id}")
    return frame, maps, method


def explanation_agreement(rd_a: RunDir, rd_b: RunDir, stage_a: str | None = None, stage_b: str | None = None,
                          share: float = TOP_SHARE) -> dict:
    """Grad-CAM of one run against the attention rollout of the other (either order), per test image both
    list: {"per_image": DataFrame(path, label, pred_gradcam, pred_rollout, iou), "per_class": per_class(...),
    "mean_iou", "n", "grid", "share", "gradcam": {id, stage}, "rollout": {id, stage}}. UserError when the runs
    are not one Grad-CAM and one rollout run on the same split."""
    sides = {}
    for rd, stage in ((rd_a, _stage(rd_a, stage_a)), (rd_b, _stage(rd_b, stage_b))):
        frame, maps, method = _explained(rd, stage)
        if method in sides or method not in METHODS:
            raise UserError(f"explanation agreement needs one Grad-CAM run (a CNN) and one attention-rollout run "
                            f"(a ViT); run {rd.id} has {method!r} maps")
        sides[method] = (rd, stage, frame, maps)
    fp_a, fp_b = run_fingerprint(rd_a), run_fingerprint(rd_b)
    if fp_a != fp_b or fp_a is None:
        raise UserError(f"runs {rd_a.id} and {rd_b.id} were not tested on one split (fingerprints {fp_a} vs "
                        f"{fp_b}); explanations can only be compared image by image on the same test images")
    (rd_c, stage_c, cnn, maps_c), (rd_v, stage_v, vit, maps_v) = sides["gradcam"], sides["attention_rollout"]
    row_of = {path: i for i, path in enumerate(vit["path"])}
    pairs = [(i, row_of[path]) for i, path in enumerate(cnn["path"]) if path in row_of]
    if not pairs:
        raise UserError(f"runs {rd_c.id} and {rd_v.id} share no test image path; recompute their evaluations")
    grid = max(*maps_c.shape[1:], *maps_v.shape[1:])
    rows_c, rows_v = (np.array(side, dtype=int) for side in zip(*pairs))
    per_image = pd.DataFrame({
        "path": cnn["path"].to_numpy()[rows_c], "label": cnn["label"].to_numpy()[rows_c],
        "pred_gradcam": cnn["pred"].to_numpy()[rows_c], "pred_rollout": vit["pred"].to_numpy()[rows_v],
        "iou": [region_iou(maps_c[i], maps_v[j], share, grid) for i, j in pairs],
    })
    valid = per_image["iou"].dropna()
    return {"per_image": per_image, "per_class": per_class(per_image),
            "mean_iou": float(valid.mean()) if len(valid) else math.nan, "n": int(len(valid)), "grid": grid,
            "share": share, "gradcam": {"id": rd_c.id, "stage": stage_c}, "rollout": {"id": rd_v.id, "stage": stage_v}}
