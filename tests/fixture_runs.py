"""Run directories for dashboard tests, written with the real writers and following DESIGN.md's contract.

The session fixture `fixture_runs` in conftest.py builds them once for the whole suite:

    def test_page(fixture_runs, monkeypatch):
        monkeypatch.setenv("VITRINE_RUNS_DIR", str(fixture_runs["cnn"].parent))

`make_fixture_runs(root, image_root)` returns {key: run directory}; every run lives directly under `root`.
Keys (ids are the directory names, ordered newest first as listed here):
    running       status running, pid = this process (alive), progress.json mid-epoch in phase ft,
                  history with tl + one ft epoch, eval tl only (synthetic probabilities)
    vit           completed vit_ti16 at 32 px, stages tl + ft, REAL weights (model.weights.h5 and
                  weights_tl / weights_ft), predictions from that model, attention_rollout maps (N, 2, 2)
    cnn           completed mobilenet_v2 at 32 px, same as vit with gradcam maps (N, 4, 4) of block_5_add
    failed        status failed with an `error`, two tl history rows, no eval, no weights
    no_ft         completed mobilenet_v2 with stage tl only (ft_epochs 0), real weights
    many_classes  completed efficientnet_b0, 120 synthetic classes over the demo images (reused), stage ft
                  only, no weights file; an OLDER run: no validation metrics, no final_stage / pretraining
    corrupt       run.json truncated garbage, history.csv garbage
The demo images: `generate_demo_dataset(image_root, per_class=6, size=40, seed=1)`; 10 classes, split
3 train / 1 val / 2 test per class, so the cnn / vit / no_ft test split has 20 images.
The real runs record what training records today: validation loss and accuracy of each stage (computed from
the model on the validation images), `final_stage` (the lower validation loss; model.weights.h5 holds it),
`pretraining` and `params.size_mb`.
Takes a few seconds (TensorFlow import + two small model builds).
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import softmax as scipy_softmax

from poc.runs import store
from poc.runs.store import RunDir
from poc.data.demo import generate_demo_dataset
from poc.data.images import load_array
from poc.analysis.evaluation import evaluate_probabilities

IMAGE_SIZE = 32
RUN_IDS = {
    "many_classes": "20250101-100000-efficientnet-b0-m120",
    "corrupt": "20250101-103000-corrupt-0bad",
    "no_ft": "20250101-110000-mobilenet-v2-notf",
    "failed": "20250101-120000-vit-ti16-fail",
    "cnn": "20250101-130000-mobilenet-v2-c0nn",
    "vit": "20250101-140000-vit-ti16-v1t0",
    "running": "20250101-150000-mobilenet-v2-run0",
}


def make_fixture_runs(root: Path, image_root: Path) -> dict[str, Path]:
    root, image_root = Path(root), Path(image_root)
    root.mkdir(parents=True, exist_ok=True)
    generate_demo_dataset(image_root, per_class=6, size=40, seed=1)
    split = _split(image_root)
    test = split[split["split"] == "test"].reset_index(drop=True)
    class_names = sorted(split["label"].unique())
    runs = {key: root / run_id for key, run_id in RUN_IDS.items()}

    _real_run(RunDir(runs["cnn"]), "mobilenet_v2", split, test, class_names, hour=13, stages=("tl", "ft"))
    _real_run(RunDir(runs["vit"]), "vit_ti16", split, test, class_names, hour=14, stages=("tl", "ft"))
    _real_run(RunDir(runs["no_ft"]), "mobilenet_v2", split, test, class_names, hour=11, stages=("tl",))
    _failed_run(RunDir(runs["failed"]), split, class_names)
    _running_run(RunDir(runs["running"]), split, test, class_names)
    _many_classes_run(RunDir(runs["many_classes"]), split)
    _corrupt_run(RunDir(runs["corrupt"]))
    return runs


# ---------------------------------------------------------------- pieces shared by the runs

def _split(image_root: Path) -> pd.DataFrame:
    from poc.data.scan import scan_dataset
    from poc.data.split import split_dataset

    return split_dataset(scan_dataset(image_root), val=0.2, test=0.3, seed=1)


def _stamp(hour: int, minute: int = 0) -> str:
    return f"2025-01-01T{hour:02d}:{minute:02d}:00+00:00"


def _history(tl_epochs: int, ft_epochs: int, seed: int, start_acc: float = 0.3) -> list[dict]:
    """Plausible curves: loss falls, accuracy rises, validation a bit worse and noisier; ft at a lower lr."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(tl_epochs + ft_epochs):
        phase = "tl" if i < tl_epochs else "ft"
        progress = (i + 1) / (tl_epochs + ft_epochs)
        acc = min(0.99, start_acc + 0.6 * progress + rng.normal(0, 0.01))
        val_acc = min(0.99, acc - 0.08 + rng.normal(0, 0.03))
        loss = 2.3 * (1 - progress) ** 1.5 + 0.1 + rng.normal(0, 0.02)
        rows.append({"epoch": i + 1, "phase": phase, "loss": loss, "accuracy": acc,
                     "val_loss": loss + 0.15 + abs(rng.normal(0, 0.05)), "val_accuracy": val_acc,
                     "lr": 1e-3 if phase == "tl" else 1e-5, "seconds": round(2.0 + rng.random(), 3)})
    return rows


def _best_epochs(rows: list[dict]) -> dict:
    best = {}
    for phase in ("tl", "ft"):
        phase_rows = [r for r in rows if r["phase"] == phase]
        if phase_rows:
            best[phase] = min(phase_rows, key=lambda r: r["val_loss"])["epoch"]
    return best


def _run_info(rd: RunDir, *, model: str, family: str, explanation: str, status: str, hour: int,
              split: pd.DataFrame, class_names: list[str], params: dict, fine_tune_at: str,
              tl_epochs: int, ft_epochs: int, best_epoch: dict, timing: dict, error: str | None = None,
              dataset_path: str = "", final_stage: str | None = None, legacy: bool = False) -> dict:
    """run.json as training writes it; `legacy`: as older versions did (no pretraining, final_stage)."""
    from poc.config import RunConfig
    from poc.data.split import held_out_fingerprint, split_fingerprint

    config = RunConfig(data=dataset_path, model=model, image_size=IMAGE_SIZE, tl_epochs=tl_epochs,
                       ft_epochs=ft_epochs, fine_tune_at=fine_tune_at, batch_size=8, seed=1,
                       name=f"{model} fixture {rd.id[-4:]}").to_dict()
    counts = split["split"].value_counts().to_dict()
    finished = _stamp(hour, 20) if status in ("completed", "failed") else None
    return {
        "id": rd.id, "name": config["name"], "status": status, "created": _stamp(hour),
        "started": _stamp(hour, 1), "finished": finished, "config": config,
        "dataset": {"path": dataset_path, "split_fingerprint": split_fingerprint(split),
                    "counts": {s: int(counts.get(s, 0)) for s in ("train", "val", "test")},
                    "num_classes": len(class_names),
                    **({} if legacy else {"test_fingerprint": held_out_fingerprint(split)})},
        "class_names": class_names, "model": model, "family": family, "explanation": explanation,
        "image_size": IMAGE_SIZE, "weights": "none", "from_run": None, "params": params,
        "fine_tune_at": fine_tune_at, "device": "CPU (x86_64)",
        "versions": {"python": "3.12.0", "tensorflow": "2.21.0", "keras": "3.15.0"}, "seed": 1,
        "timing": timing, "best_epoch": best_epoch, "error": error, "pid": None,
        **({} if legacy else {"pretraining": "none", "frozen_random": True, "final_stage": final_stage}),
    }


def _write_eval(rd: RunDir, stage: str, test: pd.DataFrame, probs: np.ndarray, class_names: list[str],
                validation: tuple[float, float] | None = None, logits: tuple | None = None) -> None:
    """The stage's eval files; `validation`: (val_loss, val_accuracy) as training adds them to metrics.json;
    `logits`: (val logits, val labels, test logits) as training writes them, with the temperature they give."""
    with warnings.catch_warnings():  # predictions_frame adds one column per class: fragmented at 120
        warnings.simplefilter("ignore", pd.errors.PerformanceWarning)
        result = evaluate_probabilities(test, probs, class_names, seed=1)
    if validation is not None:
        result["metrics"].update(val_loss=validation[0], val_accuracy=validation[1])
    if logits is not None:
        from poc.analysis.calibration import temperature_metrics

        val, val_labels, test_logits = logits
        y_test = np.array([class_names.index(label) for label in test["label"]])
        result["metrics"].update(temperature_metrics(val, val_labels, test_logits, y_test))
        rd.write_logits(stage, val, val_labels, test_logits)
    rd.write_eval(stage, **result)


def _loss_and_accuracy(probs: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Categorical cross-entropy (probabilities clipped at 1e-7, as Keras does) and accuracy."""
    picked = np.clip(probs[np.arange(len(labels)), labels], 1e-7, 1.0)
    return float(-np.log(picked).mean()), float((probs.argmax(axis=1) == labels).mean())


# ---------------------------------------------------------------- the runs

def _real_run(rd: RunDir, model_name: str, split, test, class_names, hour: int, stages: tuple[str, ...]) -> None:
    """A completed run with real weights and the predictions of that model on the test images."""
    import keras

    from poc.inference import compile_logits
    from poc.models import build, get_spec
    from poc.models.cutoffs import freeze_backbone, resolve_cutoff, trainable_count, unfreeze_from

    spec = get_spec(model_name)
    keras.utils.set_random_seed(hour)
    model = build(model_name, len(class_names), IMAGE_SIZE, "none")
    cutoff = resolve_cutoff(model.get_layer("backbone"), None, spec)
    freeze_backbone(model)
    trainable_tl = trainable_count(model)
    unfreeze_from(model, cutoff)
    params = {"total": int(model.count_params()), "trainable_tl": trainable_tl,
              "trainable_ft": trainable_count(model),
              "size_mb": sum(int(np.prod(w.shape)) * np.dtype(w.dtype).itemsize for w in model.weights) / 1e6}
    freeze_backbone(model)

    ft_epochs = 4 if "ft" in stages else 0
    history = _history(5, ft_epochs, seed=hour)
    dataset_path = str(Path(split["path"].iloc[0]).parent.parent)
    rd.path.mkdir(parents=True, exist_ok=True)
    info = _run_info(rd, model=model_name, family=spec.family, explanation=spec.explanation,
                     status="completed", hour=hour, split=split, class_names=class_names, params=params,
                     fine_tune_at=spec.default_cutoff, tl_epochs=5, ft_epochs=ft_epochs,
                     best_epoch=_best_epochs(history), dataset_path=dataset_path,
                     timing={"tl": 41.5, **({"ft": 63.25} if ft_epochs else {})})
    rd.write_run(info)
    store.write_csv(rd.split_csv, split)
    rd.write_history(history)
    rd.train_log.write_text(f"fixture run {rd.id}\n")

    pixels = raw_pixels(split["path"].tolist(), IMAGE_SIZE)  # (N_all, 32, 32, 3)
    is_test = (split["split"] == "test").to_numpy()
    is_val = (split["split"] == "val").to_numpy()
    labels = np.array([class_names.index(label) for label in split["label"]])
    rng = np.random.default_rng(hour)
    val_losses = {}
    logits = compile_logits(model, IMAGE_SIZE)  # traced once: it reads the head's variables, which each stage sets
    for stage in stages:
        # The head is fitted in closed form instead of trained (seconds, not minutes): tl on train only (the
        # validation images stay held out), ft on every image with a third of the validation and test labels
        # scrambled, so predictions differ by stage and ft, with the lower validation loss, is the final stage.
        fit_labels, fit_rows = labels.copy(), ~is_test & ~is_val
        if stage == "ft":
            noisy = (is_test | is_val) & (rng.random(len(labels)) < 0.35)
            fit_labels[noisy] = rng.integers(0, len(class_names), noisy.sum())
            fit_rows = np.ones_like(is_test)
        _fit_head(model, pixels[fit_rows], fit_labels[fit_rows], len(class_names))
        val_logits, test_logits = (np.asarray(logits(pixels[rows]), np.float64) for rows in (is_val, is_test))
        probs, val_probs = scipy_softmax(test_logits, axis=1), scipy_softmax(val_logits, axis=1)  # the head's output
        validation = _loss_and_accuracy(val_probs, labels[is_val])
        val_losses[stage] = validation[0]
        _write_eval(rd, stage, test, probs, class_names, validation, (val_logits, labels[is_val], test_logits))
        from poc.explain.maps import explain_images

        # The real maps: rollout over the 2 x 2 patch grid (ViT); Grad-CAM of mobilenet_v2, whose last feature map
        # is 1 x 1 at 32 px, on the last block with a 4 x 4 grid (block_5_add), recorded as its `layer`.
        rd.write_explanations(stage, *explain_images(model, spec, pixels[is_test]))
        if spec.explanation == "gradcam":
            rng.random((len(test), 2, 2))  # the draw its former random maps took: the later stage's noise stays
        model.save_weights(rd.stage_weights(stage))
    final = min(reversed(stages), key=val_losses.get)  # the lower validation loss; a tie goes to the later stage
    shutil.copyfile(rd.stage_weights(final), rd.weights)
    rd.update_run(final_stage=final)


def _fit_head(model, pixels: np.ndarray, labels: np.ndarray, num_classes: int, ridge: float = 1.0,
              sharpness: float = 6.0) -> None:
    """Kernel ridge regression of one-hot labels on standardised backbone features, set as the head."""
    features = np.asarray(model.get_layer("backbone")(model.get_layer("preprocess")(pixels)), np.float64)  # (N, D)
    mu, sd = features.mean(axis=0), features.std(axis=0) + 1e-30  # random CNN features can be ~1e-13
    z = (features - mu) / sd
    targets = np.eye(num_classes)[labels]  # (N, C)
    centred = targets - targets.mean(axis=0)
    w_z = z.T @ np.linalg.solve(z @ z.T + ridge * np.eye(len(z)), centred)  # (D, C)
    kernel = sharpness * w_z / sd[:, None]
    bias = sharpness * (targets.mean(axis=0) - (mu / sd) @ w_z)
    model.get_layer("head").set_weights([kernel.astype(np.float32), bias.astype(np.float32)])


def _failed_run(rd: RunDir, split, class_names) -> None:
    history = _history(2, 0, seed=12)
    rd.path.mkdir(parents=True, exist_ok=True)
    rd.write_run(_run_info(rd, model="vit_ti16", family="vit", explanation="attention_rollout", status="failed",
                           hour=12, split=split, class_names=class_names,
                           params={"total": 5489482, "trainable_tl": 1930, "trainable_ft": None},
                           fine_tune_at="blocks:8", tl_epochs=5, ft_epochs=4, best_epoch={}, timing={},
                           error="ResourceExhaustedError: OOM when allocating tensor with shape [64,197,768]"))
    store.write_csv(rd.split_csv, split)
    rd.write_history(history)


def _running_run(rd: RunDir, split, test, class_names) -> None:
    history = _history(5, 1, seed=15)
    rd.path.mkdir(parents=True, exist_ok=True)
    info = _run_info(rd, model="mobilenet_v2", family="cnn", explanation="gradcam", status="running", hour=15,
                     split=split, class_names=class_names,
                     params={"total": 2270794, "trainable_tl": 12810, "trainable_ft": 1676170},
                     fine_tune_at="block_13_expand", tl_epochs=5, ft_epochs=5,
                     best_epoch=_best_epochs([r for r in history if r["phase"] == "tl"]), timing={"tl": 40.0})
    rd.write_run({**info, "pid": os.getpid()})
    store.write_csv(rd.split_csv, split)
    rd.write_history(history)
    rng = np.random.default_rng(15)
    _write_eval(rd, "tl", test, rng.dirichlet(np.ones(len(class_names)), size=len(test)), class_names,
                validation=(2.1, 0.2))
    rd.write_progress({"phase": "ft", "epoch": 2, "epochs": 5, "global_epoch": 7, "step": 3, "steps": 5,
                       "metrics": {"loss": 0.61, "accuracy": 0.78}, "eta_seconds": 95.0})


def _many_classes_run(rd: RunDir, split) -> None:
    """120 classes: every demo image reused under four synthetic labels, ~70% predicted right."""
    n_classes = 120
    class_names = [f"class_{i:03d}" for i in range(n_classes)]
    paths = split["path"].tolist()
    rows = [(paths[i % len(paths)], class_names[i % n_classes]) for i in range(2 * n_classes)]
    test = pd.DataFrame(rows, columns=["path", "label"])
    many_split = test.assign(split="test", sha256=[f"{i:064x}" for i in range(len(test))])
    rng = np.random.default_rng(120)
    logits = rng.normal(0, 1, (len(test), n_classes))
    truth = np.array([class_names.index(label) for label in test["label"]])
    right = rng.random(len(test)) < 0.7
    logits[np.arange(len(test))[right], truth[right]] += 6.0
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)  # (N, 120)

    history = _history(3, 3, seed=120)
    rd.path.mkdir(parents=True, exist_ok=True)
    rd.write_run(_run_info(rd, model="efficientnet_b0", family="cnn", explanation="gradcam", status="completed",
                           hour=10, split=many_split, class_names=class_names,
                           params={"total": 4203291, "trainable_tl": 153720, "trainable_ft": 3100000},
                           fine_tune_at="block6a_expand_conv", tl_epochs=3, ft_epochs=3,
                           best_epoch=_best_epochs(history), timing={"tl": 30.0, "ft": 45.0}, legacy=True))
    store.write_csv(rd.split_csv, many_split)
    rd.write_history(history)
    _write_eval(rd, "ft", test, probs, class_names)


def _corrupt_run(rd: RunDir) -> None:
    rd.path.mkdir(parents=True, exist_ok=True)
    rd.run_json.write_text('{"id": "20250101-103000-corrupt-0bad", "status": "compl')
    rd.history_csv.write_bytes(b"epoch;phase\n\x00\xff garbage \"unterminated\n1,tl,,,\n")


def raw_pixels(paths: list[str], image_size: int) -> np.ndarray:
    """The decoded, resized pixels of a few images (N, S, S, 3) float32: what every model is fed."""
    return np.stack([load_array(p, image_size) for p in paths]).astype(np.float32)
