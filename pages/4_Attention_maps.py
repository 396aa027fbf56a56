"""Attention maps: where a ViT looks on the test images, per image, per class and per layer / head."""

from __future__ import annotations

import streamlit as st

from ui import agreement_view, shell
from ui import attention_maps as attention

shell.frame()
st.title("Attention maps")
st.markdown("Where a ViT looks on the test images: its stored attention rollout per image, the mean map of a "
            "class, and the raw attention of every layer and head for one image; beside it a CNN's Grad-CAM "
            "on the same images. Red = most attended, blue = least.")

families, board = attention.runs_by_family()
chosen = attention.choose_vit(families, board)  # (ViT run, stage, CNN run or ""), or None after saying why
if chosen is not None:
    run_id, stage, cnn_id = chosen
    maps = attention.load_maps(stage, run_id, cnn_id, board)
    shown = attention.filtered_rows(maps.vit, stage) if maps.vit.predictions is not None else None
    if shown is not None and not shown.rows.empty:
        attention.show_stored(shown, maps)
        attention.show_layers(run_id, stage, shown, maps)
        if cnn_id:
            st.subheader("Do the CNN and the ViT look at the same place?")
            agreement_view.render_agreement(cnn_id, run_id, None, stage)
