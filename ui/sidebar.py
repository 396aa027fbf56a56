"""Sidebar on every page: the training launcher and the background jobs list.

Cheap on every rerun: the launcher's content (which imports TensorFlow to list cutoffs and the device) runs
only while its expander is open; the jobs list reads a few small JSON files and refreshes itself every few
seconds while a job is active. Jobs belong to `poc.launch.launcher`, not to this browser session.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import streamlit as st

from poc.launch import launcher
from poc.runs import status as runstatus
from poc.runs.run_info import run_label
from poc.config import AUGMENTATIONS, RunConfig
from poc.errors import UserError
from poc.models import kerashub_presets
from poc.models.registry import KERAS_HUB_PREFIX, get_spec, model_names
from ui import data
from ui.executor_view import chosen as chosen_executor
from ui.executor_view import executor_panel
from ui.text import duration

LEARNING_RATES = [1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5, 3e-6, 1e-6]
BATCH_SIZES = [8, 16, 32, 64, 128]
WEIGHTS = {"imagenet": "imagenet (needs internet)", "demo": "demo (ViTrine's offline shape pretraining, 64 px)",
           "none": "none (random start)", "path": "checkpoint file…"}
PRESET_WEIGHTS = {"imagenet": "the preset's own weights (downloaded with it)", "none": "none (random start)"}
KERAS_HUB_HELP = ("Any KerasHub image backbone instead of the model above: a preset name, downloaded once by "
                  "KerasHub (needs internet), e.g. " + ", ".join(kerashub_presets.EXAMPLES) + "; or a local preset "
                  "directory written by Backbone.save_to_preset. Accepted backbones: "
                  + kerashub_presets.accepted_classes() + ".")
FROZEN_RANDOM = ("Phase 1 will freeze a randomly initialised backbone: a frozen random backbone gives near-constant "
                 "features, so expect near-chance accuracy until fine-tuning. For transfer learning start from "
                 "imagenet (needs internet) or demo (offline, 64 px).")
STATUS_ICONS = {"completed": "✅", "failed": "❌", "cancelled": "⏹️", "interrupted": "⚠️", "queued": "⏳",
                "running": "▶️"}
CPU_MODELS = ("vit_ti16", "mobilenet_v2")


def render_sidebar() -> None:
    with st.sidebar:
        box = st.expander("Launch a training run", key="launcher_open", on_change="rerun",
                          icon=":material/rocket_launch:")
        with box:
            if box.open:
                _launcher()
        _jobs_section()


# ---------------------------------------------------------------- cached look-ups (TensorFlow inside)

@st.cache_resource(show_spinner="Checking the device…")
def _device() -> dict:
    return launcher.device_summary()


@st.cache_resource(show_spinner="Building the model to list its layers…")
def _cutoffs(model: str, image_size: int) -> list:
    return launcher.describe_cutoffs(model, image_size)


# ---------------------------------------------------------------- the launcher

def _launcher() -> None:
    executor_panel()
    device = _device()
    if not device["gpu"]:
        st.info(f"No GPU here ({device['text']}): training is slow. For a first run try image size 64, "
                f"a few epochs and {' or '.join(CPU_MODELS)}; without internet, demo weights.")
    mode = st.radio("Start from", ["new", "run"], horizontal=True, key="launcher_mode",
                    format_func={"new": "a backbone", "run": "an existing run (fine-tune)"}.get)
    settings = _new_run_settings(device["gpu"]) if mode == "new" else _from_run_settings()
    if settings is None:
        return
    cutoff = _cutoff_picker(settings["model"], settings["image_size"])
    ft_epochs = st.number_input("Fine-tuning epochs (phase 2, 0 skips it)", 0, 10_000,
                                3 if not device["gpu"] else RunConfig.ft_epochs, key="launcher_ft_epochs")
    lr_ft = st.select_slider("Learning rate, phase 2", LEARNING_RATES, value=RunConfig.lr_ft,
                             format_func="{:.0e}".format, key="launcher_lr_ft")
    batch = st.selectbox("Batch size", BATCH_SIZES, index=BATCH_SIZES.index(RunConfig.batch_size),
                         key="launcher_batch")
    augment = st.multiselect("Augmentation (training images only)", AUGMENTATIONS, default=list(AUGMENTATIONS),
                             key="launcher_augment")
    name = st.text_input("Run name (optional)", key="launcher_name").strip() or None
    config = RunConfig(**settings, fine_tune_at=cutoff, ft_epochs=int(ft_epochs), lr_ft=lr_ft,
                       batch_size=batch, augment=augment, name=name)
    st.caption("Equivalent command")
    st.code("python -m poc train " + shlex.join(launcher.config_to_argv(config)), language="bash",
            wrap_lines=True)
    if st.button("Launch", type="primary", key="launcher_launch", icon=":material/play_arrow:"):
        _launch(config)
    _sweep_launcher(config)


def _sweep_launcher(config: RunConfig) -> None:
    """The same settings as a cutoff sweep: one phase 1, then one fine-tuning run per cutoff (Cutoff sweep page)."""
    cutoffs = st.text_input("Or sweep the cutoff: cutoffs", "auto", key="launcher_sweep_cutoffs",
                            help="auto (about 5, spread over trainable parameters) or a comma list such as "
                                 "block_13_expand,Conv_1 or blocks:4,blocks:8; the cutoff chosen above is ignored")
    if st.button("Launch sweep", key="launcher_sweep", icon=":material/tune:"):
        try:
            with st.spinner("Checking the settings and cutoffs…"):
                job = launcher.launch_sweep(config, cutoffs, executor=chosen_executor())
        except UserError as exc:
            st.error(str(exc))
        except Exception as exc:  # noqa: BLE001 - the user gets a sentence, never a traceback
            st.error(f"Could not start the sweep: {type(exc).__name__}: {exc}")
        else:
            st.success(f"Launched a sweep of {len(job.config['study']['cutoffs'])} cutoffs: follow it under Jobs "
                       "below, results on the Cutoff sweep page.")


def _new_run_settings(gpu: bool) -> dict | None:
    root = launcher.data_root()
    datasets = _datasets(root)
    how = (f"Add a dataset: a folder with one sub-folder of images per class, under `{root}` "
           "(or point VITRINE_DATA_ROOT elsewhere).")
    if not (root / "demo").is_dir():
        st.caption("No demo data yet: **Generate demo runs** on Home (with no run yet) or `python -m poc demo` "
                   "creates it and trains a CNN and a ViT on it.")
    if not datasets:
        st.warning("No dataset under the data root yet. " + how)
        return None
    data = st.selectbox("Dataset", datasets, key="launcher_data", format_func=lambda p: _relative(p, root),
                        help=how)
    models = model_names()
    model = st.selectbox("Model", models, key="launcher_model",
                         index=models.index("mobilenet_v2" if not gpu else "vit_b16"),
                         format_func=lambda m: f"{m} · {get_spec(m).description}")
    preset = st.text_input("…or a KerasHub preset", key="launcher_keras_hub", placeholder="dinov2_small or /path",
                           help=KERAS_HUB_HELP).strip()
    if preset:
        model = KERAS_HUB_PREFIX + preset
        spec = _preset_spec(model)
        if spec is None:
            return None
        choices, key = PRESET_WEIGHTS, "launcher_weights_preset"
    else:
        spec, choices, key = get_spec(model), WEIGHTS, "launcher_weights"
    weights = st.radio("Starting weights", list(choices), format_func=choices.get, key=key)
    if weights == "none":  # an explicit choice, never a default: phase 1 would train on constant features
        st.warning(FROZEN_RANDOM)
    if weights == "path":
        weights = st.text_input("Checkpoint path or URL", key="launcher_weights_path",
                                placeholder="/path/to/ViT-B_16.npz").strip() or "path"
    size_default = spec.default_image_size if gpu else max(64, spec.min_image_size)
    size_default = -(-size_default // spec.patch) * spec.patch  # up to a multiple of the patch size
    image_size = st.number_input("Image size (px)", 16, 1024, size_default, step=spec.patch,
                                 key=f"launcher_size_{model}")
    tl_epochs = st.number_input("Transfer-learning epochs (phase 1)", 1, 10_000,
                                RunConfig.tl_epochs if gpu else 5, key="launcher_tl_epochs")
    lr_tl = st.select_slider("Learning rate, phase 1", LEARNING_RATES, value=RunConfig.lr_tl,
                             format_func="{:.0e}".format, key="launcher_lr_tl")
    return {"data": str(data), "model": model, "weights": weights, "image_size": int(image_size),
            "tl_epochs": int(tl_epochs), "lr_tl": lr_tl}


def _preset_spec(model: str):
    """The registry's spec of a `keras_hub:` model, or None with the reason shown (a bad format, a preset that is
    not an image backbone, or a name that could not be downloaded: said within DOWNLOAD_TIMEOUT seconds)."""
    problem = kerashub_presets.format_problem(model[len(KERAS_HUB_PREFIX):])
    if problem is None:
        with st.spinner("Reading the preset's config (a preset name is downloaded once)…"):
            spec, problem = _preset_lookup(model)
        if spec is not None:
            st.caption(spec.description)
            return spec
    st.error(problem)
    return None


@st.cache_data(ttl=300, show_spinner=False)
def _preset_lookup(model: str) -> tuple:
    """(spec, None) or (None, why): failures are kept too, so a rerun does not wait for the download again."""
    try:
        return get_spec(model), None
    except UserError as exc:
        return None, str(exc)


def _from_run_settings() -> dict | None:
    board = data.load_leaderboard()
    completed = board.loc[board["status"] == "completed", "id"].tolist()
    runs = {r.id: r.info for r in data.indexed_runs(completed) if r.dir.stage_weights("tl").exists()}
    if not runs:
        st.info("No completed run with phase-1 weights yet: train one from a backbone first.")
        return None
    run_id = st.selectbox("Run", list(runs), key="launcher_from_run",
                          format_func=lambda r: run_label(runs[r], r))
    info = runs[run_id]
    st.caption(f"Reuses {run_id}'s phase-1 weights and split ({info.get('model')}, {info.get('image_size')} px): "
               "only phase 2 runs, so phase-1 epochs and learning rate do not apply.")
    return {"data": str((info.get("dataset") or {}).get("path", "")), "model": info.get("model"),
            "image_size": info.get("image_size"), "tl_epochs": 0, "from_run": run_id}


def _cutoff_picker(model: str, image_size: int | None) -> str | None:
    """The phase-2 cutoff, labelled with layer/block names and the trainable parameters it leaves."""
    try:
        choices = _cutoffs(model, image_size)
    except UserError as exc:
        st.error(str(exc))
        return None
    by_value = {c.value: c for c in choices}
    default = get_spec(model).default_cutoff
    values = list(by_value)
    value = st.selectbox("Frozen-layer cutoff (phase 2)", values, key=f"launcher_cutoff_{model}_{image_size}",
                         index=values.index(default) if default in by_value else 0,
                         format_func=lambda v: f"{v} · {by_value[v].trainable_params:,} trainable",
                         help="Layers before the cutoff stay frozen while fine-tuning; BatchNorm always does.")
    chosen, head_only = by_value[value], choices[-1].trainable_params
    st.caption(f"{chosen.label.capitalize()}: **{chosen.trainable_params:,}** trainable parameters in phase 2 "
               f"({head_only:,} in phase 1, the head only).")
    return value


def _datasets(root: Path) -> list[Path]:
    """The demo data first, then every folder under the data root that has sub-folders (classes)."""
    if not root.is_dir():
        return []
    found = [p for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")
             and any(c.is_dir() and not c.name.startswith(".") for c in p.iterdir())]
    return sorted(found, key=lambda p: p.name != "demo")


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _launch(config: RunConfig) -> None:
    try:
        with st.spinner("Checking the settings…"):
            job = launcher.launch_training(config, executor=chosen_executor())
    except UserError as exc:
        st.error(str(exc))
    except Exception as exc:  # noqa: BLE001 - the user gets a sentence, never a traceback
        st.error(f"Could not start the run: {type(exc).__name__}: {exc}")
    else:
        st.success(f"Launched run `{job.run_id}`: follow it under Jobs below.")


# ---------------------------------------------------------------- jobs

JOBS_READ = "sidebar.jobs_read"  # the job list the page run read, handed to its fragment's first run
# Every open session reruns the jobs list while a job trains, and each rerun costs the server and that browser a
# render: progress that moves by epochs needs no faster refresh (2 s before; README, "Load").
JOBS_REFRESH_S = 5

def _jobs_section() -> None:
    jobs = launcher.list_jobs()  # read once per page run: its fragment's first run below takes it as it is
    active = any(j.active for j in jobs)
    st.session_state[JOBS_READ] = jobs
    # Refresh only while something runs; the fragment reruns alone, not the page.
    st.fragment(run_every=JOBS_REFRESH_S if active else None)(_jobs)(active)


def _jobs(was_active: bool) -> None:
    jobs = st.session_state.pop(JOBS_READ, None)  # the page run's list; the fragment's own reruns read it anew
    jobs = launcher.list_jobs() if jobs is None else jobs
    active = [j for j in jobs if j.active]
    if was_active and not active:
        st.rerun()  # a job just finished: refresh the whole page (runs table) and stop the timer
    if active and not was_active:
        st.rerun()  # a job started here (Resume): rerun the page, so that this list refreshes itself
    st.markdown("**Jobs**")
    if error := st.session_state.pop("jobs_error", None):
        st.error(error)
    if notice := st.session_state.pop("jobs_notice", None):
        st.success(notice)
    _resumable_runs()
    if not jobs:
        st.caption("No jobs yet: launch a run above, or `python -m poc demo` in a terminal.")
        return
    for job in active:
        _active_job(job)
    finished = [j for j in jobs if not j.active]
    if finished:
        with st.expander(f"Finished jobs ({len(finished)})"):
            for job in finished[:20]:
                _finished_job(job)


def _active_job(job: launcher.JobStatus) -> None:
    where = " · on the cluster" if (job.job.executor or {}).get("kind", "local") != "local" else ""
    st.markdown(f"{STATUS_ICONS.get(job.status, '')} **{job.name}** · {job.status}{where}")
    parts = [launcher.PHASE_WORDS.get(job.phase, job.phase or job.status)]
    if job.epoch and job.epochs:
        parts.append(f"epoch {job.epoch}/{job.epochs}")
    if job.eta_seconds is not None:
        parts.append(f"ETA {duration(job.eta_seconds)}")
    st.progress(float(job.progress or 0.0), text=" · ".join(parts))
    st.button("Cancel", key=f"cancel_{job.id}", on_click=_cancel, args=(job.id,), icon=":material/stop:")


def _finished_job(job: launcher.JobStatus) -> None:
    st.markdown(f"{STATUS_ICONS.get(job.status, '')} **{job.name}** · {job.status}")
    if job.message and job.status != "completed":
        st.caption(job.message)


def _resumable_runs() -> None:
    """Runs whose training process died (or that failed with a checkpoint), each with a Resume button."""
    runs = launcher.resumable_runs(data.runs_dir(), ids=data.unfinished_runs())
    if not runs:
        return
    with st.expander(f"Interrupted runs ({len(runs)})", expanded=True):
        for run in runs[:10]:
            status = runstatus.effective_status(run)
            st.markdown(f"{STATUS_ICONS.get(status, '')} **{run.info.get('name') or run.id}** · {status}")
            st.caption("Resume continues from its last completed epoch (`python -m poc train --resume "
                       f"{run.id}`).")
            st.button("Resume", key=f"resume_{run.id}", on_click=_resume, args=(run.id,), icon=":material/replay:")


def _resume(run_id: str) -> None:
    try:
        job = launcher.launch_resume(run_id, executor=chosen_executor())
    except Exception as exc:  # noqa: BLE001 - UserError says why; anything else is still a sentence
        st.session_state["jobs_error"] = f"Could not resume {run_id}: {exc}"
    else:
        st.session_state["jobs_notice"] = f"Resuming run `{job.run_id}`: follow it under Jobs."


def _cancel(job_id: str) -> None:
    try:
        launcher.cancel(job_id)
    except Exception as exc:  # noqa: BLE001
        st.session_state["jobs_error"] = f"Could not cancel {job_id}: {exc}"

