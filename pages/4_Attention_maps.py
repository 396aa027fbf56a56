"""Attention maps: where a ViT looks on the test images, per image, per class and per layer / head."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from ui import agreement_view, data, shell, state
from ui import explain_view as ev
from ui.overlay import heatmap_image, normalise, overlay, thumbnail, tile_grid

STAGE_LABELS = {"tl": "tl (after transfer learning)", "ft": "ft (after fine-tuning)"}
TILE = 160  # px, longer side of a grid tile
MEAN_WIDTH = 240  # px on screen
NO_CNN = ""


def runs_by_family() -> tuple[dict[str, list[str]], pd.DataFrame]:
    """{"vit": [...], "cnn": [...], "hub": [...]} run ids, completed runs first (newest first within)."""
    board = data.load_leaderboard()
    if board.empty:
        return {}, board
    board = board.assign(fam=[ev.run_family(r) for r in board.to_dict("records")],
                         done=board["status"] == "completed")
    board = board.sort_values(["done", "created", "id"], ascending=False, na_position="last")
    return {fam: rows["id"].tolist() for fam, rows in board.groupby("fam", sort=False)}, board


def correct_mark(row) -> str:
    return "✓" if str(row["label"]) == str(row["pred"]) else "✗"


def tile(path: str, heat: np.ndarray | None, opacity: float):
    """The test image with `heat` over it at TILE px, or None when the image file is gone."""
    image = data.load_image(path, max_side=TILE)
    if image is None:
        return None
    image = thumbnail(image, TILE)
    return image if heat is None else overlay(image, heat, opacity)


def show_grid(rows: pd.DataFrame, vit: ev.StoredMaps, cnn: ev.StoredMaps | None, cnn_rows: dict,
              opacity: float, per_row: int) -> None:
    for start in range(0, len(rows), per_row):
        cols = st.columns(per_row)
        for col, (_, row) in zip(cols, rows.iloc[start:start + per_row].iterrows()):
            path = str(row["path"])
            vit_tile = tile(path, vit.maps[int(row["row"])], opacity)
            if vit_tile is None:
                col.warning(f"{ev.short_name(path)}: image file missing")
                continue
            caption = f"{ev.short_name(path)} · ViT: {row['pred']} {correct_mark(row)} {row['confidence']:.0%}"
            tiles = [vit_tile]
            if cnn is not None:
                match = cnn_rows.get(path)
                if match is not None:
                    crow = cnn.predictions.iloc[match]
                    tiles.append(tile(path, cnn.maps[match], opacity))
                    caption += f" · CNN: {crow['pred']} {correct_mark(crow)} {crow['confidence']:.0%}"
                else:
                    caption += " · CNN: not in its test split"
            col.image(tile_grid([tiles]), caption=caption, width="stretch")


def show_mean_maps(rows: pd.DataFrame, vit: ev.StoredMaps, cnn: ev.StoredMaps | None, cnn_rows: dict,
                   what: str) -> None:
    cols = st.columns(3)
    vit_mean = ev.mean_map(vit.maps, rows["row"])
    cols[0].image(heatmap_image(normalise(vit_mean), (TILE, TILE)), width=MEAN_WIDTH,
                  caption=f"ViT mean attention rollout · {what} · {len(rows)} images")
    if cnn is not None:
        matched = [cnn_rows[p] for p in rows["path"].astype(str) if p in cnn_rows]
        cnn_mean = ev.mean_map(cnn.maps, matched)
        if cnn_mean is None:
            cols[1].info("The CNN's test split has none of these images (different dataset or split).")
        else:
            cols[1].image(heatmap_image(normalise(cnn_mean), (TILE, TILE)), width=MEAN_WIDTH,
                          caption=f"CNN mean Grad-CAM · {what} · {len(matched)} images")
    cols[2].markdown(
        "The mean map averages the per-image maps (each scaled to max 1) and is rescaled to [0, 1]. "
        "A ViT that looks at the object gives a centred blob on a class whose objects are centred; "
        "a uniform map or bright corners suggest it relies on background or position.")


def show_layers(run_id: str, stage: str, rows: pd.DataFrame, vit: ev.StoredMaps, cnn: ev.StoredMaps | None,
                cnn_rows: dict, opacity: float) -> None:
    st.subheader("Layer by layer")
    st.caption("Raw attention of the class token to each patch, for every encoder block (layer) and head, "
               "computed live on one image with this stage's weights. Early layers tend to attend locally or "
               "uniformly; rollout (above) multiplies all layers together.")
    choices = rows["row"].astype(int).tolist()
    by_row = rows.set_index("row")
    if st.session_state.get(f"attn.image.{run_id}.{stage}") not in choices:  # filtered out: start over
        st.session_state.pop(f"attn.image.{run_id}.{stage}", None)
    pick = st.selectbox("Image", choices, key=f"attn.image.{run_id}.{stage}",
                        format_func=lambda r: f"{ev.short_name(by_row.at[r, 'path'])} "
                                              f"(true {by_row.at[r, 'label']}, ViT {by_row.at[r, 'pred']})")
    path = str(by_row.at[pick, "path"])
    try:
        with st.spinner("Computing the attention of every layer..."):
            layers = ev.per_layer_attention(run_id, stage, path)  # (L, H, g, g)
    except Exception as exc:  # noqa: BLE001 - missing weights or image, damaged file: said, not raised
        st.warning(f"Per-layer attention unavailable for {ev.short_name(path)}: {getattr(exc, 'reason', exc)}")
        return
    n_layers, n_heads = layers.shape[:2]
    left, right = st.columns([1, 3])
    if vit.maps is not None:
        left.image(tile(path, vit.maps[pick], opacity), caption="stored attention rollout", width="stretch")
    if cnn is not None and path in cnn_rows:
        left.image(tile(path, cnn.maps[cnn_rows[path]], opacity), caption="CNN Grad-CAM", width="stretch")
    image = data.load_image(path, max_side=TILE)
    if image is None:
        st.warning(f"{ev.short_name(path)} cannot be opened any more; per-layer maps are not drawn.")
        return
    with right:
        layer = st.slider("Layer", 1, n_layers, n_layers, key=f"attn.layer.{run_id}") if n_layers > 1 else 1
        heads = [overlay(thumbnail(image, TILE), normalise(layers[layer - 1, h]), opacity) for h in range(n_heads)]
        per_row = min(n_heads, 6)
        for start in range(0, n_heads, per_row):
            cols = st.columns(per_row)
            for h, col in zip(range(start, min(start + per_row, n_heads)), cols):
                col.image(heads[h], caption=f"layer {layer}, head {h + 1}", width="stretch")
    with st.expander(f"All {n_layers} layers × {n_heads} heads"):
        small = thumbnail(image, 64)
        grid = tile_grid([[overlay(small, normalise(layers[l, h]), opacity) for h in range(n_heads)]
                          for l in range(n_layers)], gap=2)
        st.image(grid, caption=f"rows: layers 1-{n_layers} (top to bottom) · columns: heads 1-{n_heads}")


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


def load_maps(stage: str, run_id: str, cnn_id: str, board: pd.DataFrame) -> tuple:
    """(ViT StoredMaps, CNN StoredMaps or None, {path: CNN row}); what is missing is said on the page."""
    vit = ev.stored_maps(run_id, stage, "vit")
    if vit.problem:
        st.info(f"No stored attention maps for this run: {vit.problem}")
    elif vit.method != "attention_rollout":
        st.info(f"eval/{stage}/explanations.npz of this run holds {vit.method!r} maps, not attention rollout; "
                "they are shown as stored.")
    if not cnn_id:
        return vit, None, {}
    cnn_stages = data.run_stages(cnn_id)
    cnn_stage = stage if stage in cnn_stages else cnn_stages[-1]
    cnn = ev.stored_maps(cnn_id, cnn_stage, ev.run_family(board.set_index("id").loc[cnn_id].to_dict()))
    if cnn.problem:
        st.info(f"No Grad-CAM maps for the CNN run {cnn_id}: {cnn.problem}")
        return vit, None, {}
    if cnn_stage != stage:
        st.caption(f"The CNN has no stage {stage}; its {cnn_stage} maps are shown.")
    return vit, cnn, {str(p): i for i, p in enumerate(cnn.predictions["path"])}


def filtered_rows(vit: ev.StoredMaps, stage: str) -> tuple[pd.DataFrame, str, int, float]:
    """(rows of the chosen class and outcome, a description of them, tiles to show, overlay opacity)."""
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
        st.info(f"No {outcome if outcome != 'all' else ''} test image of class {label} in stage {stage}.")
    what = f"class {label}" if label != "all" else "all classes"
    what += f", {outcome} only" if outcome != "all" else ""
    return rows, what, limit, opacity


def main() -> None:
    families, board = runs_by_family()
    chosen = choose_vit(families, board)
    if chosen is None:
        return
    run_id, stage, cnn_id = chosen
    vit, cnn, cnn_rows = load_maps(stage, run_id, cnn_id, board)
    if vit.predictions is None:
        return
    rows, what, limit, opacity = filtered_rows(vit, stage)
    if rows.empty:
        return
    if vit.maps is not None:
        st.subheader(f"Mean map · {what}")
        show_mean_maps(rows, vit, cnn, cnn_rows, what)
        st.subheader(f"Test images · {min(limit, len(rows))} of {len(rows)}")
        if cnn is not None:
            st.caption("Each tile: ViT attention rollout (left) and CNN Grad-CAM (right) on the same image.")
        show_grid(rows.head(limit), vit, cnn, cnn_rows, opacity, per_row=4 if cnn is not None else 6)
    show_layers(run_id, stage, rows, vit, cnn, cnn_rows, opacity)
    if cnn_id:
        st.subheader("Do the CNN and the ViT look at the same place?")
        agreement_view.render_agreement(cnn_id, run_id, None, stage)


shell.ensure_frame()
st.title("Attention maps")
st.markdown("Where a ViT looks on the test images: its stored attention rollout per image, the mean map of a "
            "class, and the raw attention of every layer and head for one image; beside it a CNN's Grad-CAM "
            "on the same images. Red = most attended, blue = least.")
main()
