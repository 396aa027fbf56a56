"""One self-contained HTML report of one or more runs: `python -m poc report RUN [RUN ...] --out FILE.html`.

Self-contained: every chart is a PNG drawn with matplotlib and every test image a thumbnail, both inlined as
base64 data URIs; the styles sit in one <style> element; there is no script, no link and nothing to fetch, so
the file opens offline and can be mailed. Sections (SECTIONS): configuration, model cost, learning curves,
confusion matrices, per-class metrics, calibration, comparison statistics (every pair of runs, and each run's
fine-tuning against its transfer learning), sample errors with their images, and each run's mean explanation
map (Grad-CAM names the layer it read). A missing artifact is said in its section, never fatal. Pure reading: RunDirs in, one HTML string out.
"""

from __future__ import annotations

import html
import itertools
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from poc.runs import store
from poc.analysis import cost
from poc.analysis.calibration import calibration
from poc.analysis import report_figures as figures
from poc.runs.run_info import run_label
from poc.runs.status import final_stage
from poc.runs.store import RunDir, StageEval
from poc.errors import UserError

SECTIONS = {"config": "Configuration", "cost": "Model cost", "curves": "Learning curves",
            "confusion": "Confusion matrices", "per_class": "Per-class metrics", "calibration": "Calibration",
            "comparison": "Comparison statistics", "errors": "Sample errors", "explanations": "Explanation maps"}
METHOD_NAMES = {"attention_rollout": "attention rollout", "gradcam": "Grad-CAM"}
SAMPLE_ERRORS = 12  # per run: the most confident mistakes of its final stage
STAGE_NAMES = {"tl": "after transfer learning (tl)", "ft": "after fine-tuning (ft)"}
CONFIG_FIELDS = ["id", "name", "status", "model", "family", "pretraining", "weights", "image_size", "fine_tune_at",
                 "final_stage", "seed", "device", "created", "finished"]
STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em auto;max-width:1100px;color:#222;
line-height:1.45;padding:0 1em}h1{margin-bottom:.2em}h2{border-bottom:2px solid #3182bd;padding-bottom:.2em;
margin-top:2em}table{border-collapse:collapse;margin:.5em 0 1em;font-size:.9em}th,td{border:1px solid #ccc;
padding:.25em .6em;text-align:left}th{background:#f0f4f8}td.num{text-align:right;font-variant-numeric:tabular-nums}
img.chart{max-width:100%;height:auto}pre{background:#f6f8fa;padding:.8em;overflow-x:auto;font-size:.85em}
.gallery{display:flex;flex-wrap:wrap;gap:.6em}.gallery figure{margin:0;width:120px;font-size:.75em}
.gallery img{width:112px;height:112px;object-fit:contain;background:#eee}.note{color:#666;font-size:.9em}
.worse{color:#c0392b;font-weight:600}.row{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start}
.row figure{margin:0;flex:1 1 45%;min-width:320px}.row figcaption{font-size:.9em;margin-bottom:.3em}
"""


@dataclass
class _Run:
    rd: RunDir
    info: dict
    stages: dict[str, StageEval]  # the evaluated stages, in training order
    history: pd.DataFrame | None

    @property
    def label(self) -> str:
        return run_label(self.info, self.rd.id)

    @property
    def final(self) -> str | None:
        return final_stage(self.info.get("final_stage"), list(self.stages))


def _load(rd: RunDir) -> _Run:
    info = store.read_json(rd.run_json)
    if info is None:
        raise UserError(f"run {rd.id}: run.json missing or unreadable in {rd.path}; a report needs a readable run")
    stages = {s: store.read_stage(rd, s) for s in store.STAGES if rd.eval_file(s, "metrics").exists()
              or rd.eval_file(s, "predictions").exists()}
    return _Run(rd, info, stages, store.read_history(rd))


# ---------------------------------------------------------------- html pieces

def _e(value) -> str:
    return html.escape("—" if value is None else str(value))


def _num(value, spec: str = ".3f") -> str:
    number = store.as_number(value)
    return "—" if number is None else format(number, spec)


def _img(uri: str | None, alt: str, css: str = "chart") -> str:
    return f'<img class="{css}" alt="{_e(alt)}" src="{uri}">' if uri else f'<p class="note">{_e(alt)}: not drawn</p>'


def _table(frame: pd.DataFrame, numeric: set[str] = frozenset(), raw: set[str] = frozenset()) -> str:
    """An HTML table; `numeric` columns right-aligned, `raw` columns already HTML."""
    head = "".join(f"<th>{_e(c)}</th>" for c in frame.columns)
    rows = []
    for record in frame.itertuples(index=False):
        cells = []
        for column, value in zip(frame.columns, record):
            text = str(value) if column in raw else _e(value)
            cells.append(f'<td class="num">{text}</td>' if column in numeric else f"<td>{text}</td>")
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _note(text: str) -> str:
    return f'<p class="note">{_e(text)}</p>'


def _row(figures_html: list[str]) -> str:
    """Side by side (one per stage), wrapping on a narrow page."""
    return f'<div class="row">{"".join(figures_html)}</div>' if figures_html else ""


def _figure(body: str, caption: str) -> str:
    return f"<figure><figcaption>{_e(caption)}</figcaption>{body}</figure>"


# ---------------------------------------------------------------- sections

def _config(runs: list[_Run]) -> str:
    parts = []
    for run in runs:
        info, config = run.info, run.info.get("config") if isinstance(run.info.get("config"), dict) else {}
        dataset = info.get("dataset") if isinstance(info.get("dataset"), dict) else {}
        rows = [(f, info.get(f)) for f in CONFIG_FIELDS]
        rows += [("dataset", dataset.get("path")), ("split fingerprint", dataset.get("split_fingerprint")),
                 ("images per split", json.dumps(dataset.get("counts"))),
                 ("classes", len(info.get("class_names") or [])),
                 *((k, config.get(k)) for k in ("tl_epochs", "ft_epochs", "lr_tl", "lr_ft", "batch_size", "augment")),
                 ("timing (s)", json.dumps(info.get("timing"))), ("versions", json.dumps(info.get("versions")))]
        table = _table(pd.DataFrame(rows, columns=["field", "value"]))
        full = html.escape(json.dumps(config, indent=2, default=str))
        parts.append(f"<h3>{_e(run.label)}</h3>{table}<details><summary>full configuration</summary>"
                     f"<pre>{full}</pre></details>")
    return "".join(parts)


def _cost(runs: list[_Run]) -> str:
    table = cost.cost_table([r.rd for r in runs])
    shown = pd.DataFrame({
        "run": [r.label for r in runs], "input px": [_num(v, ".0f") for v in table["image_size"]],
        "parameters": [_num(v, ",.0f") for v in table["total"]],
        "trainable tl": [_num(v, ",.0f") for v in table["trainable_tl"]],
        "trainable ft": [_num(v, ",.0f") for v in table["trainable_ft"]],
        "weights on disk (MB)": [_num(v, ".1f") for v in table["weights_mb"]],
        "latency (ms / image)": [_num(v, ".1f") if pd.notna(v) else "not measured" for v in table["latency_ms"]],
        "multiply-adds / image": [f"≈ {v / 1e6:,.1f} M" if pd.notna(v) else "not computed" for v in table["macs"]],
    })
    methods = "; ".join(f"{m}: {w}" for m, w in dict(zip(table["model"], table["macs_method"])).items())
    return _table(shown, numeric=set(shown.columns[1:])) + _note(f"Multiply-adds estimated ({methods}).")


def _curves(runs: list[_Run]) -> str:
    return "".join(f"<h3>{_e(r.label)}</h3>" + (_img(figures.curves_png(r.history), f"learning curves of {r.label}")
                                                if r.history is not None and not r.history.empty
                                                else _note("no history.csv")) for r in runs)


def _confusion(runs: list[_Run]) -> str:
    parts = []
    for run in runs:
        parts.append(f"<h3>{_e(run.label)}</h3>")
        shown = []
        for stage, ev in run.stages.items():
            title = f"{run.label}, {STAGE_NAMES[stage]}"
            shown.append(_figure(_img(figures.confusion_png(ev.confusion, title), f"confusion matrix, {title}")
                                 if ev.confusion is not None else _note("confusion matrix missing or malformed"),
                                 STAGE_NAMES[stage]))
        parts.append(_row(shown) if run.stages else _note("not evaluated"))
    return "".join(parts)


def _per_class(runs: list[_Run]) -> str:
    parts = []
    for run in runs:
        reports = {s: ev.report for s, ev in run.stages.items() if ev.report is not None}
        parts.append(f"<h3>{_e(run.label)}</h3>")
        if not reports:
            parts.append(_note("no classification report"))
            continue
        first = next(iter(reports.values()))
        shown = pd.DataFrame({"class": first["class"], "support": first["support"].map(lambda v: _num(v, ".0f"))})
        for stage, report in reports.items():
            by_class = report.set_index("class")
            for metric in ("precision", "recall", "f1"):
                shown[f"{metric} {stage}"] = [_num(by_class[metric].get(c)) for c in first["class"]]
        if len(reports) == 2:
            delta = reports["ft"].set_index("class")["f1"] - reports["tl"].set_index("class")["f1"]
            shown["F1 change"] = [f'<span class="worse">{d:+.3f}</span>' if d < 0 else f"{d:+.3f}"
                                  for d in delta.reindex(first["class"]).fillna(0.0)]
        parts.append(_table(shown, numeric=set(shown.columns[1:]), raw={"F1 change"}))
    return "".join(parts)


def _calibration(runs: list[_Run]) -> str:
    parts = [_note("Reliability diagrams: test predictions in 15 equal-width confidence bins; a calibrated model "
                   "sits on the diagonal. ECE = sum over bins of (share of images) x |accuracy - confidence|. The "
                   "temperature is fitted on the validation split only, then applied to the test predictions.")]
    for run in runs:
        parts.append(f"<h3>{_e(run.label)}</h3>")
        shown = []
        for stage in run.stages:
            result = calibration(run.rd, stage)
            if result is None or not result["n"]:
                shown.append(_figure(_note("no probabilities to calibrate"), STAGE_NAMES[stage]))
                continue
            after = (f"; after temperature scaling (T = {result['temperature']:.2f}) {result['ece_calibrated']:.3f}"
                     if result["temperature"] else f"; {result.get('missing') or 'no temperature'}")
            title = f"{STAGE_NAMES[stage]}: ECE {result['ece']:.3f}{after}"
            shown.append(_figure(_img(figures.reliability_png(result, STAGE_NAMES[stage]), f"reliability, {title}"),
                                 title))
        parts.append(_row(shown))
    return "".join(parts)


def _comparison(runs: list[_Run]) -> str:
    from poc.analysis.compare import compare_runs, format_comparison, stage_change

    parts = []
    for a, b in itertools.combinations(runs, 2):
        parts.append(f"<h3>A = {_e(a.label)} · B = {_e(b.label)}</h3>")
        try:
            result = compare_runs(a.rd, b.rd, allow_unpaired=True)
        except UserError as exc:
            parts.append(_note(str(exc)))
            continue
        if not result["paired"]:
            parts.append(_note("Unpaired: the two runs were tested on different images, so the interval is "
                               "Newcombe's unpaired score interval and there is no McNemar test."))
        parts.append(f"<pre>{_e(format_comparison(result))}</pre>")
    for run in runs:
        if set(run.stages) >= {"tl", "ft"}:
            parts.append(f"<h3>{_e(run.label)}: fine-tuning (ft) against transfer learning (tl)</h3>")
            try:
                parts.append(f"<pre>{_e(format_comparison(stage_change(run.rd)))}</pre>")
            except UserError as exc:
                parts.append(_note(str(exc)))
    return "".join(parts) or _note("One run with one stage: nothing to compare. Report two runs for a paired "
                                   "comparison (McNemar, exact paired interval).")


def _errors(runs: list[_Run], per_run: int) -> str:
    parts = []
    for run in runs:
        stage = run.final
        frame = run.stages[stage].predictions if stage else None
        parts.append(f"<h3>{_e(run.label)}</h3>")
        if frame is None:
            parts.append(_note("no predictions"))
            continue
        wrong = frame[frame["label"] != frame["pred"]].sort_values("confidence", ascending=False, kind="stable")
        parts.append(_note(f"{len(wrong)} of {len(frame)} test images wrong {STAGE_NAMES[stage]}; the "
                           f"{min(per_run, len(wrong))} most confident mistakes:"))
        figures_html = []
        for row in wrong.head(per_run).itertuples(index=False):
            caption = f"true {row.label} → {row.pred} ({_num(row.confidence, '.0%')})"
            uri = figures.thumbnail_uri(row.path)
            image = _img(uri, Path(str(row.path)).name, css="thumb") if uri else _note(f"missing: {row.path}")
            figures_html.append(f"<figure>{image}<figcaption>{_e(caption)}</figcaption></figure>")
        parts.append(f'<div class="gallery">{"".join(figures_html)}</div>')
    return "".join(parts)


def explanation_caption(method: str, layer: str | None, shape: tuple) -> str:
    """"Grad-CAM on block_12_add (4×4 map)": the method, the backbone layer it read (when recorded), the grid."""
    return (METHOD_NAMES.get(method, method) + (f" on {layer}" if layer else "")
            + (f" ({shape[0]}×{shape[1]} map)" if len(shape) == 2 else ""))


def _explanations(runs: list[_Run]) -> str:
    parts = []
    for run in runs:
        stage = run.final
        stored = store.read_explanations(run.rd, stage) if stage else None
        if stored is None:
            parts.append(_note(f"{run.label}: no stored explanation maps (TF-Hub backbone, or eval/<stage>/"
                               "explanations.npz missing)"))
            continue
        maps, method = stored
        if maps.ndim != 3 or not len(maps):
            parts.append(_note(f"{run.label}: explanations.npz holds no maps"))
            continue
        what = explanation_caption(method, store.read_explanation_layer(run.rd, stage), maps.shape[1:])
        caption = f"{run.label}: mean {what} over {len(maps)} test images {STAGE_NAMES[stage]}"
        parts.append(_figure(_img(figures.heatmap_png(maps.mean(axis=0), what), caption), caption))
    return _row(parts)


# ---------------------------------------------------------------- the report

def build_report(rds: list[RunDir], sample_errors: int = SAMPLE_ERRORS) -> str:
    """The whole report as one HTML string (SECTIONS, in that order)."""
    if not rds:
        raise UserError("a report needs at least one run")
    runs = [_load(rd) for rd in rds]
    bodies = {"config": _config(runs), "cost": _cost(runs), "curves": _curves(runs), "confusion": _confusion(runs),
              "per_class": _per_class(runs), "calibration": _calibration(runs), "comparison": _comparison(runs),
              "errors": _errors(runs, sample_errors), "explanations": _explanations(runs)}
    toc = " · ".join(f'<a href="#{key}">{title}</a>' for key, title in SECTIONS.items())
    sections = "".join(f'<section id="{key}"><h2>{title}</h2>{bodies[key]}</section>'
                       for key, title in SECTIONS.items())
    names = ", ".join(r.label for r in runs)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>ViTrine report: {_e(names)}</title><style>{STYLE}</style></head><body>"
            f"<h1>ViTrine report</h1><p>{_e(names)} · written {_e(store.utc_now())}</p><nav>{toc}</nav>"
            f"{sections}</body></html>\n")


def write_report(rds: list[RunDir], out: Path | str) -> dict:
    """Writes build_report to `out` (folders created); {"out", "runs", "sections", "bytes"}."""
    out = Path(out)
    if out.is_dir():
        raise UserError(f"--out {out} is a folder; give a file name such as {out / 'report.html'}")
    text = build_report(rds)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    return {"out": str(out), "runs": [rd.id for rd in rds], "sections": list(SECTIONS.values()),
            "bytes": len(text.encode("utf-8"))}

