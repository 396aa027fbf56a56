"""The Attention-maps page's logic: a ViT's stored attention rollout per image and per class, its raw attention
per layer and head, and a CNN's Grad-CAM beside it.

Pure (no Streamlit calls, unit-tested on their own): group_by_family, correct_mark, selection_text,
no_rows_message, cnn_method, cnn_stage, path_index, matched_rows, tile_caption. Rendering: runs_by_family,
choose_vit, load_maps, filtered_rows, show_stored (mean maps and image grid) and show_layers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from ui import data, state
from ui import explain_view as ev
from ui.chart_cache import shared
from ui.overlay import heatmap_image, normalise, overlay, thumbnail, tile_grid

STAGE_LABELS = {"tl": "tl (after transfer learning)", "ft": "ft (after fine-tuning)"}
TILE = 160  # px, longer side of a grid tile
MEAN_WIDTH = 240  # px on screen
NO_CNN = ""


# ---------------------------------------------------------------- pure

def group_by_family(board: pd.DataFrame) -> tuple[dict[str, list[str]], pd.DataFrame]:
    """({"vit": [...], "cnn": [...], "hub": [...]}, the board sorted): completed runs first, newest first within
    (by `created`, then id); runs without `created` last."""
    if board.empty:
        return {}, board
    board = board.assign(fam=[ev.run_family(r) for r in board.to_dict("records")],
                         done=board["status"] == "completed")
    board = board.sort_values(["done", "created", "id"], ascending=False, na_position="last")
    return {fam: rows["id"].tolist() for fam, rows in board.groupby("fam", sort=False)}, board


def correct_mark(row) -> str:
    """✓ when the prediction row's label is its predicted class, else ✗."""
    return "✓" if str(row["label"]) == str(row["pred"]) else "✗"


def selection_text(label: str, outcome: str) -> str:
    """What the filters chose, e.g. "class cat, incorrect only" or "all classes"."""
    what = f"class {label}" if label != "all" else "all classes"
    return what + (f", {outcome} only" if outcome != "all" else "")


def no_rows_message(label: str, outcome: str, stage: str) -> str:
    return f"No {outcome if outcome != 'all' else ''} test image of class {label} in stage {stage}."


def cnn_stage(stage: str, cnn_stages: list[str]) -> str:
    """The CNN's stage shown beside the ViT's `stage`: the same one, else the CNN's last."""
    return stage if stage in cnn_stages else cnn_stages[-1]


def path_index(predictions: pd.DataFrame) -> dict[str, int]:
    """{image path: row of predictions.csv}, to find a ViT test image among the CNN's."""
    return {str(p): i for i, p in enumerate(predictions["path"])}


def matched_rows(paths, cnn_rows: dict[str, int]) -> list[int]:
    """The CNN rows of the `paths` that are in its test split, in `paths` order."""
    return [cnn_rows[p] for p in map(str, paths) if p in cnn_rows]


def cnn_method(cnn: ev.StoredMaps) -> str:
    """"Grad-CAM on block_12_add (4×4 map)": the CNN's stored maps, the layer they were read from (when recorded)
    and their native grid."""
    shape = tuple(cnn.maps.shape[1:]) if cnn.maps is not None and cnn.maps.ndim == 3 else None
    return ev.method_caption(cnn.method or "gradcam", cnn.layer, shape)


def tile_caption(path: str, row, cnn_row=None, has_cnn: bool = False) -> str:
    """"<class>/<file> · ViT: <pred> ✓ 90%", then the CNN's prediction, or that the image is not in its split."""
    caption = f"{ev.short_name(path)} · ViT: {row['pred']} {correct_mark(row)} {row['confidence']:.0%}"
    if cnn_row is not None:
        caption += f" · CNN: {cnn_row['pred']} {correct_mark(cnn_row)} {cnn_row['confidence']:.0%}"
    elif has_cnn:
        caption += " · CNN: not in its test split"
    return caption


# ---------------------------------------------------------------- choosing and loading

def runs_by_family() -> tuple[dict[str, list[str]], pd.DataFrame]:
    """group_by_family of the leaderboard."""
    return group_by_family(data.load_leaderboard())


def choose_vit(families: dict, board: pd.DataFrame) -> tuple[str, str, str] | None:
    """(ViT run id, stage, CNN run id or NO_CNN) picked on the top row; None (with a message) when none fits."""
    vit_ids = families.get("vit", [])
    if not vit_ids:
        st.info("No ViT run yet, so there is no attention to show. Train one, e.g. "
                "`python -m poc train --data data/demo --model vit_ti16 --image-size 64`, "
                "or run `python -m poc demo` for a CNN and a ViT.")
        hub = families.get("hub", [])
        if hub:
            st.info(f"{len(hub)} TF-Hub run(s) exist, but TF-Hub SavedModels expose no attention weights.")
        return None
    top = st.columns([2, 1, 2])
    run_id = state.choose_run("ViT run", key="attn.run", candidates=vit_ids, container=top[0])
    if run_id is None:
        return None
    stages = data.run_stages(run_id)
    if not stages:
        status = dict(zip(board["id"], board["status"])).get(run_id, "unknown")
        st.info(f"Run {run_id} has no evaluation yet (status {status}), so there are no "
                "stored attention maps. They are written when a stage finishes its test evaluation.")
        return None
    stage = top[1].selectbox("Stage", stages, index=len(stages) - 1, key=f"attn.stage.{run_id}",
                             format_func=lambda s: STAGE_LABELS.get(s, s))
    cnn_ids = [i for i in families.get("cnn", []) if data.run_stages(i)]
    preferred = next((i for i in state.selected_runs() if i in cnn_ids), NO_CNN)
    if st.session_state.get("attn.cnn") not in [NO_CNN, *cnn_ids]:
        st.session_state["attn.cnn"] = preferred
    cnn_labels = data.run_labels(cnn_ids)
    cnn_id = top[2].selectbox("Beside it: CNN Grad-CAM", [NO_CNN, *cnn_ids], key="attn.cnn",
                              format_func=lambda i: cnn_labels.get(i, i) if i else "none")
    return run_id, stage, cnn_id


@dataclass
class Maps:
    vit: ev.StoredMaps
    cnn: ev.StoredMaps | None = None
    cnn_rows: dict[str, int] = field(default_factory=dict)  # {path: CNN predictions row}


def load_maps(stage: str, run_id: str, cnn_id: str, board: pd.DataFrame) -> Maps:
    """The ViT's stored maps and, when a CNN is chosen and has them, the CNN's; what is missing is said."""
    vit = ev.stored_maps(run_id, stage, "vit")
    if vit.problem:
        st.info(f"No stored attention maps for this run: {vit.problem}")
    elif vit.method != "attention_rollout":
        st.info(f"eval/{stage}/explanations.npz of this run holds {vit.method!r} maps, not attention rollout; "
                "they are shown as stored.")
    if not cnn_id:
        return Maps(vit)
    shown_stage = cnn_stage(stage, data.run_stages(cnn_id))
    cnn = ev.stored_maps(cnn_id, shown_stage, ev.run_family(board.set_index("id").loc[cnn_id].to_dict()))
    if cnn.problem:
        st.info(f"No Grad-CAM maps for the CNN run {cnn_id}: {cnn.problem}")
        return Maps(vit)
    if shown_stage != stage:
        st.caption(f"The CNN has no stage {stage}; its {shown_stage} maps are shown.")
    return Maps(vit, cnn, path_index(cnn.predictions))


@dataclass
class Shown:
    rows: pd.DataFrame  # the ViT's prediction rows of the chosen class and outcome
    what: str  # selection_text of them
    limit: int  # tiles to show
    opacity: float  # of the overlays


def filtered_rows(vit: ev.StoredMaps, stage: str) -> Shown:
    """The class / outcome / count / opacity row of widgets and the rows it selects (an st.info when none)."""
    class_names = sorted(vit.predictions["label"].astype(str).unique())
    if st.session_state.get("attn.class", "all") not in ["all", *class_names]:  # a run with other classes
        st.session_state["attn.class"] = "all"
    f1, f2, f3, f4 = st.columns([2, 2, 2, 2])
    label = f1.selectbox("Class (true label)", ["all", *class_names], key="attn.class")
    outcome = f2.radio("Predictions", ["all", "correct", "incorrect"], horizontal=True, key="attn.outcome")
    limit = f3.slider("Images shown", 4, 60, 12, 4, key="attn.limit")
    opacity = f4.slider("Overlay opacity", 0.0, 1.0, 0.5, 0.05, key="attn.opacity")
    rows = ev.filter_rows(vit.predictions, None if label == "all" else label, outcome)
    if rows.empty:
        st.info(no_rows_message(label, outcome, stage))
    return Shown(rows, selection_text(label, outcome), limit, opacity)


# ---------------------------------------------------------------- stored maps

def tile(path: str, heat: np.ndarray | None, opacity: float):
    """The test image with `heat` over it at TILE px, or None when the image file is gone; drawn once per image,
    map and opacity (ui.chart_cache.shared), then shared by every rerun and session."""
    return shared(_tile, path, data.stamp(Path(path)), heat, opacity)


def _tile(path: str, signature: tuple, heat: np.ndarray | None, opacity: float):
    image = data.load_image(path, max_side=TILE)
    if image is None:
        return None
    image = thumbnail(image, TILE)
    return image if heat is None else overlay(image, heat, opacity)


def _grid(rows: pd.DataFrame, maps: Maps, opacity: float, per_row: int) -> None:
    vit, cnn = maps.vit, maps.cnn
    for start in range(0, len(rows), per_row):
        cols = st.columns(per_row)
        for col, (_, row) in zip(cols, rows.iloc[start:start + per_row].iterrows()):
            path = str(row["path"])
            vit_tile = tile(path, vit.maps[int(row["row"])], opacity)
            if vit_tile is None:
                col.warning(f"{ev.short_name(path)}: image file missing")
                continue
            tiles, cnn_row = [vit_tile], None
            match = maps.cnn_rows.get(path) if cnn is not None else None
            if match is not None:
                cnn_row = cnn.predictions.iloc[match]
                tiles.append(tile(path, cnn.maps[match], opacity))
            col.image(tile_grid([tiles]), caption=tile_caption(path, row, cnn_row, cnn is not None), width="stretch")


def _mean_maps(rows: pd.DataFrame, maps: Maps, what: str) -> None:
    cols = st.columns(3)
    vit_mean = ev.mean_map(maps.vit.maps, rows["row"])
    cols[0].image(heatmap_image(normalise(vit_mean), (TILE, TILE)), width=MEAN_WIDTH,
                  caption=f"ViT mean attention rollout · {what} · {len(rows)} images")
    if maps.cnn is not None:
        matched = matched_rows(rows["path"], maps.cnn_rows)
        cnn_mean = ev.mean_map(maps.cnn.maps, matched)
        if cnn_mean is None:
            cols[1].info("The CNN's test split has none of these images (different dataset or split).")
        else:
            cols[1].image(heatmap_image(normalise(cnn_mean), (TILE, TILE)), width=MEAN_WIDTH,
                          caption=f"CNN mean {cnn_method(maps.cnn)} · {what} · {len(matched)} images")
    cols[2].markdown(
        "The mean map averages the per-image maps (each scaled to max 1) and is rescaled to [0, 1]. "
        "A ViT that looks at the object gives a centred blob on a class whose objects are centred; "
        "a uniform map or bright corners suggest it relies on background or position.")


def show_stored(shown: Shown, maps: Maps) -> None:
    """The mean map of the selected images and their tiles (ViT rollout, CNN Grad-CAM beside it when chosen);
    nothing when the ViT's maps are missing (load_maps said why)."""
    if maps.vit.maps is None:
        return
    st.subheader(f"Mean map · {shown.what}")
    _mean_maps(shown.rows, maps, shown.what)
    st.subheader(f"Test images · {min(shown.limit, len(shown.rows))} of {len(shown.rows)}")
    if maps.cnn is not None:
        st.caption(f"Each tile: ViT attention rollout (left) and CNN {cnn_method(maps.cnn)} (right) on the same "
                   "image.")
    _grid(shown.rows.head(shown.limit), maps, shown.opacity, per_row=4 if maps.cnn is not None else 6)


# ---------------------------------------------------------------- per layer

def _layer_heads(image, layers: np.ndarray, run_id: str, opacity: float) -> None:
    """A layer slider and that layer's heads over the image; all layers x heads in an expander."""
    n_layers, n_heads = layers.shape[:2]
    layer = st.slider("Layer", 1, n_layers, n_layers, key=f"attn.layer.{run_id}") if n_layers > 1 else 1
    heads = [overlay(thumbnail(image, TILE), normalise(layers[layer - 1, h]), opacity) for h in range(n_heads)]
    per_row = min(n_heads, 6)
    for start in range(0, n_heads, per_row):
        cols = st.columns(per_row)
        for h, col in zip(range(start, min(start + per_row, n_heads)), cols):
            col.image(heads[h], caption=f"layer {layer}, head {h + 1}", width="stretch")


@st.fragment(run_every=1)
def _rerun_when_ready(run_id: str, stage: str) -> None:
    """Checks every second (a fragment's own rerun, the page stays as drawn) and reruns the page once the model
    per-layer attention needs is built."""
    if ev.per_layer_model_ready(run_id, stage):
        st.rerun()


def show_layers(run_id: str, stage: str, shown: Shown, maps: Maps) -> None:
    """Raw class-token attention of every layer and head of one chosen image, computed live."""
    st.subheader("Layer by layer")
    st.caption("Raw attention of the class token to each patch, for every encoder block (layer) and head, "
               "computed live on one image with this stage's weights. Early layers tend to attend locally or "
               "uniformly; rollout (above) multiplies all layers together.")
    choices = shown.rows["row"].astype(int).tolist()
    by_row = shown.rows.set_index("row")
    key = f"attn.image.{run_id}.{stage}"
    if st.session_state.get(key) not in choices:  # filtered out: start over
        st.session_state.pop(key, None)
    pick = st.selectbox("Image", choices, key=key,
                        format_func=lambda r: f"{ev.short_name(by_row.at[r, 'path'])} "
                                              f"(true {by_row.at[r, 'label']}, ViT {by_row.at[r, 'pred']})")
    path = str(by_row.at[pick, "path"])
    if not ev.per_layer_model_ready(run_id, stage):  # the page never waits for a model: it shows them when ready
        st.caption("⏳ Loading this run's model for the attention of every layer: the first use since the "
                   "dashboard started loads TensorFlow and builds it (seconds); the maps appear here when it is ready.")
        _rerun_when_ready(run_id, stage)
        return
    try:
        with st.spinner("Computing the attention of every layer..."):
            layers = ev.per_layer_attention(run_id, stage, path)  # (L, H, g, g)
    except Exception as exc:  # noqa: BLE001 - missing weights or image, damaged file: said, not raised
        st.warning(f"Per-layer attention unavailable for {ev.short_name(path)}: {getattr(exc, 'reason', exc)}")
        return
    n_layers, n_heads = layers.shape[:2]
    left, right = st.columns([1, 3])
    if maps.vit.maps is not None:
        left.image(tile(path, maps.vit.maps[pick], opacity=shown.opacity), caption="stored attention rollout",
                   width="stretch")
    if maps.cnn is not None and path in maps.cnn_rows:
        left.image(tile(path, maps.cnn.maps[maps.cnn_rows[path]], shown.opacity),
                   caption=f"CNN {cnn_method(maps.cnn)}", width="stretch")
    image = data.load_image(path, max_side=TILE)
    if image is None:
        st.warning(f"{ev.short_name(path)} cannot be opened any more; per-layer maps are not drawn.")
        return
    with right:
        _layer_heads(image, layers, run_id, shown.opacity)
    with st.expander(f"All {n_layers} layers × {n_heads} heads"):
        grid = shared(_all_heads, path, data.stamp(Path(path)), layers, shown.opacity)
        st.image(grid, caption=f"rows: layers 1-{n_layers} (top to bottom) · columns: heads 1-{n_heads}")


def _all_heads(path: str, signature: tuple, layers: np.ndarray, opacity: float):
    """Every layer (rows) and head (columns) over a 64 px thumbnail of the image, as one picture."""
    small = thumbnail(data.load_image(path, max_side=TILE), 64)
    return tile_grid([[overlay(small, normalise(layers[l, h]), opacity) for h in range(layers.shape[1])]
                      for l in range(layers.shape[0])], gap=2)
