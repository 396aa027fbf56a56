"""Live predict: one image through each compared run, with its top-k, explanation and latency."""

from __future__ import annotations

import streamlit as st

from ui import live_predict, shell

shell.frame()
st.title("Live predict")
st.markdown("Run your own image (or a test image) through each run side by side: top-k classes, where the model "
            "looked (attention rollout for ViTs, Grad-CAM for CNNs) and how long one image takes.")
live_predict.render()
