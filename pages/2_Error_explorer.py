"""Error explorer: where a run fails after transfer learning (tl) and after fine-tuning (ft), image by image."""

from __future__ import annotations

import streamlit as st

from ui import data, shell
from ui import error_explorer as errors
from ui.safe import safely

shell.frame()
st.title("Error explorer")
st.markdown("Where a run fails on its test images after each phase: click a confusion-matrix cell to see its "
            "images, or pick a class to see what it gets right, misses and wrongly attracts.")

run_id = errors.choose_run()  # None after saying that no run has an evaluation yet
if run_id is not None:
    stages = data.run_stages(run_id)
    evals = {s: data.load_stage(run_id, s) for s in stages}  # checked where read: problems listed, not fixed
    errors.render_problems(stages, evals)
    errors.render_matrices(run_id, stages, evals)
    safely("Cell gallery", errors.render_cell_section, stages, evals)
    safely("Per-class metrics", errors.render_per_class, stages, evals)
    safely("Class galleries", errors.render_class_galleries, stages, evals)
    if "tl" in stages and "ft" in stages:
        safely("tl -> ft changes", errors.render_changes, run_id, evals)
