"""Home's leaderboard: the table as shown, its filters, the runs to compare, and the failed or damaged runs."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from ui import data, state, text

COMPARE_KEY = "home.compare"

COLUMN_CONFIG = {
    "run": st.column_config.TextColumn("run", width="medium"),
    "pretraining": st.column_config.TextColumn(help="what the backbone started from: imagenet, demo (ViTrine's "
                                                    "offline shape pretraining), none (random), a checkpoint, "
                                                    "or an earlier run"),
    "trainable tl": st.column_config.NumberColumn("trainable tl", format="compact",
                                                  help="trainable parameters in phase 1 (transfer learning)"),
    "trainable ft": st.column_config.NumberColumn("trainable ft", format="compact",
                                                  help="trainable parameters in phase 2 (fine-tuning)"),
    "size MB": st.column_config.NumberColumn("size MB", format="%.1f",
                                             help="the model's parameters (4 bytes each in float32), without "
                                                  "optimizer state"),
    "accuracy tl [95% CI]": st.column_config.TextColumn(help="test accuracy after transfer learning, "
                                                             "95% interval"),
    "accuracy ft [95% CI]": st.column_config.TextColumn(help="test accuracy after fine-tuning, 95% interval"),
    "final stage": st.column_config.TextColumn(help="the stage whose weights the run keeps: the lower "
                                                    "validation loss (older runs: the last evaluated stage)"),
    "val accuracy": st.column_config.NumberColumn(format="%.3f", help="validation accuracy of the final stage "
                                                                      "(what Home's verdict selects on)"),
    "test macro-F1 (final stage)": st.column_config.NumberColumn(
        format="%.3f", help="macro-F1 on the TEST split of the final stage: the unweighted mean of the per-class "
                            "F1 over the classes present in the test split (a class with no test image is left "
                            "out, not counted as 0)"),
    "progress": st.column_config.ProgressColumn("progress", min_value=0.0, max_value=1.0, format="percent",
                                                help="of the current phase, for running runs"),
    "error": st.column_config.TextColumn("error", width="large"),
    "id": st.column_config.TextColumn("id", width="small"),
}


def _best_epochs(row: pd.Series) -> str | None:
    parts = [f"{stage} {int(row[f'best_epoch_{stage}'])}" for stage in ("tl", "ft")
             if pd.notna(row.get(f"best_epoch_{stage}"))]
    return " · ".join(parts) or None


def _display_table(board: pd.DataFrame) -> pd.DataFrame:
    """The leaderboard as shown: one row per run, labelled columns."""
    labels = data.run_labels()
    rows = [r for _, r in board.iterrows()]
    return pd.DataFrame({
        "run": [labels.get(i, i) for i in board["id"]],
        "model": board["model"],
        "pretraining": board["pretraining"],
        "cutoff": board["fine_tune_at"].astype("string"),
        "trainable tl": board["trainable_tl"],
        "trainable ft": board["trainable_ft"],
        "size MB": board["size_mb"],
        "accuracy tl [95% CI]": [text.accuracy(r["acc_tl"], r["acc_tl_low"], r["acc_tl_high"]) for r in rows],
        "accuracy ft [95% CI]": [text.accuracy(r["acc_ft"], r["acc_ft_low"], r["acc_ft_high"]) for r in rows],
        "final stage": board["final_stage"],
        "val accuracy": board["val_acc"],
        "test macro-F1 (final stage)": board["macro_f1"],
        "best epochs": [_best_epochs(r) for r in rows],
        "training time": [text.duration(s) for s in board["train_seconds"]],
        "device": board["device"],
        "status": board["status"],
        "progress": board["progress"],
        "error": board["error"],
        "id": board["id"],
    })


def _filters(board: pd.DataFrame) -> pd.DataFrame:
    c1, c2, c3 = st.columns(3)
    families = sorted(f for f in board["family"].dropna().unique())
    statuses = sorted(board["status"].dropna().unique())
    datasets = sorted(d for d in board["dataset"].dropna().unique() if d)
    pick_family = c1.multiselect("Model family", families, key="home.f_family", placeholder="all")
    pick_status = c2.multiselect("Status", statuses, key="home.f_status", placeholder="all")
    pick_data = c3.selectbox("Dataset", ["all datasets"] + datasets, key="home.f_dataset")
    if pick_family:
        board = board[board["family"].isin(pick_family)]
    if pick_status:
        board = board[board["status"].isin(pick_status)]
    if pick_data != "all datasets":
        board = board[board["dataset"] == pick_data]
    return board


def _compare_picker(board: pd.DataFrame) -> None:
    options = board.loc[board["status"] != "unreadable", "id"].tolist()
    state.compare_picker("Runs to compare on the other pages", options, key=COMPARE_KEY,
                         help="Learning curves overlay these runs; the error explorer starts with the first. "
                              "Default: the most recent completed CNN and ViT.")


def _damaged(board: pd.DataFrame) -> None:
    bad = board[board["problems"].notna() | board["status"].isin(["unreadable", "interrupted"])]
    if bad.empty:
        return
    st.warning(f"{len(bad)} run director{'y is' if len(bad) == 1 else 'ies are'} damaged or incomplete: "
               + ", ".join(f"`{i}`" for i in bad["id"]))
    with st.expander(f"Damaged or incomplete runs ({len(bad)})"):
        for _, row in bad.iterrows():
            why = row["problems"] if isinstance(row["problems"], str) else ""
            if row["status"] == "interrupted":
                why = "; ".join(filter(None, [why, "marked running but its process is gone (killed?)"]))
            st.markdown(f"- **{row['id']}** ({row['status']}): {why}")


def _failed(board: pd.DataFrame) -> None:
    failed = board[board["status"].isin(["failed", "cancelled"])]
    if failed.empty:
        return
    with st.expander(f"Failed or cancelled runs ({len(failed)})"):
        for _, row in failed.iterrows():
            st.error(f"**{data.run_label(row)}** (`{row['id']}`): {row['error'] or 'no error message recorded'}")


def render_leaderboard(board: pd.DataFrame) -> None:
    st.subheader("Leaderboard")
    shown = _filters(board[board["status"] != "unreadable"])
    if shown.empty:
        st.info("No run matches these filters.")
    else:
        st.dataframe(_display_table(shown), hide_index=True, column_config=COLUMN_CONFIG)
    _compare_picker(board)
    _failed(board)
    _damaged(board)
