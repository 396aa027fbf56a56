"""Cutoff sweep: test accuracy, overfitting gap and training time against trainable parameters, CNN and ViT on the
same axes; data-size studies and seed repeats below."""

from __future__ import annotations

import streamlit as st

from ui import shell, studies_view


def main() -> None:
    studies_view.render()


shell.frame()
st.title("Cutoff sweep")
st.markdown("How much of the backbone should fine-tuning unfreeze, and does the ViT need more data than the CNN? "
            "Accuracy with its interval, against trainable parameters and training images.")
main()
