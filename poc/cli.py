"""`python -m poc <command>`: exit 0 on success, 2 on bad input (message on stderr), 1 on internal failure.

Heavy imports (TensorFlow) happen inside the commands that need them, so `--help`, `scan` and usage errors
answer at once.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import traceback
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter is not for users

from poc.runs import store  # noqa: E402
from poc.config import RunConfig, add_config_arguments, config_from_namespace  # noqa: E402
from poc.errors import Cancelled, UserError  # noqa: E402

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m poc", description="ViTrine: CNN vs ViT workbench")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")

    p = sub.add_parser("demo-data", help="write the procedurally generated cartoon dataset")
    p.add_argument("out", type=Path)
    p.add_argument("--per-class", type=int, default=100)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("scan", help="validate an image-folder dataset")
    p.add_argument("data", type=Path)
    p.add_argument("--json", action="store_true")
    p.add_argument("--min-per-class", type=int, default=3)

    p = sub.add_parser("split", help="write a stratified train/val/test manifest")
    p.add_argument("data", type=Path)
    p.add_argument("--val", type=float, default=0.1)
    p.add_argument("--test", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="manifest path (default: print a summary only)")

    p = sub.add_parser("train", help="two-phase training: transfer learning, then fine-tuning")
    add_train_arguments(p)

    p = sub.add_parser("sweep", help="cutoff sweep: one split + one phase 1, then one fine-tuning run per cutoff")
    add_config_arguments(p)
    p.add_argument("--cutoffs", required=True, help="auto (about 5 cutoffs spread over trainable parameters) or a "
                   "comma list in --fine-tune-at syntax, e.g. block_13_expand,Conv_1 or blocks:4,blocks:8")
    _add_seeds_argument(p)
    p.add_argument("--runs-dir", type=Path, default=None)
    p.add_argument("--json", action="store_true")
    p.add_argument("--study-id", default=None, help=argparse.SUPPRESS)  # set by the dashboard launcher
    _add_executor_arguments(p)
    p.add_argument("--detach", action="store_true", help="with --executor ray: return at once, printing the Ray "
                   "job id of the sweep's driver, which submits the runs on the cluster and follows them")

    p = sub.add_parser("evaluate", help="recompute the eval artifacts of a finished run")
    p.add_argument("run")
    p.add_argument("--runs-dir", type=Path, default=None)

    p = sub.add_parser("predict", help="top-k classes of images with a trained run")
    p.add_argument("run")
    p.add_argument("images", nargs="+", type=Path)
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--stage", choices=store.STAGES, default=None)
    p.add_argument("--json", action="store_true")
    p.add_argument("--explain", action="store_true",
                   help="also each image's explanation map (attention rollout or Grad-CAM) and, for Grad-CAM, "
                        "the backbone layer it read")
    p.add_argument("--runs-dir", type=Path, default=None)

    p = sub.add_parser("runs", help="list runs")
    p.add_argument("--runs-dir", type=Path, default=None)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("compare", help="paired comparison of two runs: accuracy difference, McNemar, per-class F1")
    p.add_argument("run_a")
    p.add_argument("run_b")
    p.add_argument("--stage", choices=store.STAGES, default=None, help="default: each run's final stage")
    p.add_argument("--unpaired", action="store_true", help="compare runs on different splits (no McNemar)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--runs-dir", type=Path, default=None)

    p = sub.add_parser("report", help="one self-contained HTML report of runs (images and charts inline)")
    p.add_argument("runs", nargs="+", metavar="RUN")
    p.add_argument("--out", type=Path, required=True, help="the HTML file to write")
    p.add_argument("--json", action="store_true")
    p.add_argument("--runs-dir", type=Path, default=None)

    p = sub.add_parser("baseline", help="pixel logistic regression and linear probe on the same split, as runs")
    from poc.train.baselines import add_arguments as add_baseline_arguments  # TensorFlow-free

    add_baseline_arguments(p)

    sub.add_parser("pretrain", add_help=False, help="pretrain a demo backbone on generated shapes "
                   "(python -m poc pretrain --help lists its options)")

    p = sub.add_parser("demo", help="demo data + one CNN and one ViT run (minutes on a 2-core CPU)")
    p.add_argument("--runs-dir", type=Path, default=None)
    p.add_argument("--data-dir", type=Path, default=None)
    _add_executor_arguments(p)

    p = sub.add_parser("jobs", help="background jobs (local queue and cluster): status and progress; --cancel JOB")
    p.add_argument("--runs-dir", type=Path, default=None)
    p.add_argument("--cancel", default=None, metavar="JOB", help="stop a job; its run reads cancelled")
    p.add_argument("--json", action="store_true")
    return parser


def _add_executor_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--executor", choices=("local", "ray"), default=None,
                   help="where runs execute: the local queue (default) or a Ray cluster, one job per run "
                        "(default: ray when VITRINE_RAY_ADDRESS is set)")
    p.add_argument("--cluster", default=None, metavar="ADDRESS",
                   help="the Ray cluster's job-submission address, e.g. http://HEAD:8265 (default: "
                        "VITRINE_RAY_ADDRESS)")


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    p.add_argument("--resume", default=None, metavar="RUN",
                   help="continue an interrupted run from its last completed epoch (other flags are ignored)")
    _add_seeds_argument(p)
    p.add_argument("--runs-dir", type=Path, default=None)
    p.add_argument("--run-id", default=None, help=argparse.SUPPRESS)  # set by the dashboard launcher
    # Set by poc.launch.remote for a run of a study on a cluster, and for a resume its launcher checked:
    p.add_argument("--study", type=json.loads, default=None, help=argparse.SUPPRESS)
    p.add_argument("--split-seed", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--executor-checked", action="store_true", help=argparse.SUPPRESS)
    _add_executor_arguments(p)


def _add_seeds_argument(p: argparse.ArgumentParser) -> None:
    from poc.config import number_list

    p.add_argument("--seeds", type=number_list(int, "--seeds"), default=None, metavar="LIST",
                   help="repeat with each seed (e.g. 0,1,2) for the initial weights, augmentation and shuffling; "
                        "every repeat keeps the split seeded by --seed, so the runs are paired")


def config_from_args(a: argparse.Namespace) -> RunConfig:
    return config_from_namespace(a)


# ---------------------------------------------------------------- commands

def cmd_demo_data(a) -> int:
    from poc.data.demo import generate_demo_dataset

    if a.per_class < 3:
        raise UserError(f"--per-class {a.per_class} is too small; at least 3 images per class (train/val/test)")
    if not 16 <= a.size <= 1024:
        raise UserError(f"--size {a.size} is out of range; use 16 to 1024 pixels")
    summary = generate_demo_dataset(a.out, per_class=a.per_class, size=a.size, seed=a.seed,
                                    progress=_progress_printer("demo-data"))
    print(f"wrote {summary['images']} images in {len(summary['classes'])} classes "
          f"({summary['rgba']} RGBA) to {a.out}")
    return 0


def cmd_scan(a) -> int:
    from poc.data.scan import scan_dataset

    report = scan_dataset(a.data, min_per_class=a.min_per_class, progress=_progress_printer("scan"))
    print(json.dumps(report.to_dict(), indent=2) if a.json else report.summary_text())
    return 0 if report.usable else 2


def cmd_split(a) -> int:
    from poc.data.split import scan_and_split, split_fingerprint

    df = scan_and_split(a.data, val=a.val, test=a.test, seed=a.seed)
    table = df.groupby(["label", "split"]).size().unstack(fill_value=0).reindex(columns=["train", "val", "test"])
    print(table.to_string())
    for note in [*df.attrs.get("carved", {}).values(), *df.attrs.get("warnings", [])]:
        print(f"note: {note}")
    print(f"fingerprint {split_fingerprint(df)}")
    if a.out:
        store.write_split(a.out, df)
        print(f"wrote {a.out}")
    return 0


def _executor(a):
    """The executor `--executor/--cluster` (or VITRINE_RAY_ADDRESS) chooses, a cluster checked to answer first
    (UserError naming its address, nothing submitted). Imports no Ray on the local path."""
    from poc.launch.executors import choose

    executor = choose(a.executor, a.cluster)
    if executor.kind != "local":
        executor.client()
    return executor


def cmd_train(a) -> int:
    from poc.train.training import resume, train

    _console_logging()
    executor = _executor(a)
    if executor.kind != "local":
        return _train_on(executor, a)
    if a.resume:
        alive = False if a.executor_checked else _remote_alive(a.resume, a.runs_dir)
        rd = resume(a.resume, a.runs_dir, executor_alive=alive)
    elif not a.data:
        raise UserError("train needs --data DATA (a dataset folder), or --resume RUN to continue a run")
    elif a.seeds is not None or len(a.train_fraction) > 1:  # a study: one run per seed and fraction
        from poc.train.studies import plan_repeats

        if a.run_id:
            raise UserError("--run-id names one run; it does not combine with --seeds or a --train-fraction list")
        fractions, a.train_fraction = a.train_fraction, a.train_fraction[:1]
        return _run_study(plan_repeats(config_from_args(a), a.seeds, fractions), a.runs_dir, a)
    else:
        from poc.train.multiworker import worker_runs_dir

        config = config_from_args(a)
        with worker_runs_dir(config.distribute, a.runs_dir) as (runs_dir, writes_the_run):
            rd = train(config, runs_dir, run_id=a.run_id, study=a.study, split_seed=a.split_seed)
        if not writes_the_run:
            print("this worker's share of the training is done; the chief worker writes the run directory",
                  file=sys.stderr)
            return 0
    print(rd.path)
    return 0


def _remote_alive(ref: str, runs_dir) -> bool | None:
    """A remote run's liveness as its cluster reports it (None for a local-queue run: its pid tells)."""
    from poc.launch.remote import executor_alive_of

    return executor_alive_of(ref, runs_dir)


def _train_on(executor, a) -> int:
    """`train --executor ray`: each run one cluster job; waits, printing progress, then prints run directories."""
    from poc.launch import remote

    if a.resume:
        print(remote.resume_on(executor, a.resume, a.runs_dir).path)
        return 0
    if not a.data:
        raise UserError("train needs --data DATA (a dataset folder), or --resume RUN to continue a run")
    if a.seeds is not None or len(a.train_fraction) > 1:
        from poc.train.studies import plan_repeats

        fractions, a.train_fraction = a.train_fraction, a.train_fraction[:1]
        plan = plan_repeats(config_from_args(a), a.seeds, fractions)
    else:
        from poc.train.plan import validate

        plan = remote.single_plan(validate(config_from_args(a), a.runs_dir).config)
    result, _ = remote.run_plan_on(executor, plan, a.runs_dir)
    return _print_study(result, a) if plan.kind != "run" else _print_run(result)


def _print_run(result) -> int:
    for failure in result.failed:
        print(f"error: {failure}", file=sys.stderr)
    for rd in result.runs:
        print(rd.path)
    return 1 if result.failed else 0


def cmd_sweep(a) -> int:
    from poc.train.studies import plan_sweep, validate_sweep

    _console_logging()
    if len(a.train_fraction) > 1:
        raise UserError("sweep takes one --train-fraction; run one sweep per share")
    executor = _executor(a)
    if a.detach and executor.kind == "local":
        raise UserError("--detach is for --executor ray; the local queue's sweeps run in the foreground "
                        "(or from the dashboard)")
    config = config_from_args(a)
    if executor.kind == "local" and not config.from_run:  # a mistyped folder, said before TensorFlow's import
        from poc.data.scan import check_dataset_folder

        check_dataset_folder(config.data)
    # The settings and every cutoff checked before anything trains.
    checked, cutoffs = validate_sweep(config, a.cutoffs, a.runs_dir)
    plan = plan_sweep(checked.config, cutoffs, a.seeds, study_id=a.study_id)
    if executor.kind == "local":
        return _run_study(plan, a.runs_dir, a)
    from poc.launch import remote

    if a.detach:
        job = remote.detach_sweep(executor, checked.config, [c.value for c in cutoffs], a.seeds, plan, a.runs_dir)
        print(job.executor["job_id"])  # the cluster's job id: `ray job status/logs/stop` take it
        print(f"the sweep's driver runs on the cluster as Ray job {job.executor['job_id']}: it submits phase 1 now "
              f"and each phase-2 run when phase 1 completes; follow them with: python -m poc jobs --runs-dir "
              f"{job.argv[job.argv.index('--runs-dir') + 1]}", file=sys.stderr)
        return 0
    result, _ = remote.run_plan_on(executor, plan, a.runs_dir)
    return _print_study(result, a)


def _run_study(plan, runs_dir, a) -> int:
    """Train a poc.train.studies plan; print each run directory, then the study's summary (`train` prints the summary
    on stderr, so that its stdout stays one run directory per line). Keras' epoch lines go to stderr too, so
    stdout holds only the answer (--json: one JSON object). Exit 1 when a run failed."""
    import contextlib

    if getattr(a, "distribute", "none") == "multiworker":
        raise UserError("--distribute multiworker trains one run at a time: start `train` on every machine once "
                        "per run, or run the sweep / seed list on one machine (--distribute mirrored for its GPUs)")
    from poc.train.studies import run_plan

    with contextlib.redirect_stdout(sys.stderr):
        result = run_plan(plan, runs_dir)
    return _print_study(result, a)


def _print_study(result, a) -> int:
    from poc.analysis.study_results import result_json, study_summary, summary_text

    table = study_summary([store.load_run(rd.path) for rd in result.runs])
    if getattr(a, "json", False):
        print(json.dumps(result_json(result.plan.id, result.plan.kind, result.runs, result.failed, table), indent=2))
    else:
        for rd in result.runs:
            print(rd.path)
        print(summary_text(table), file=sys.stderr if a.command == "train" else sys.stdout)
    for failure in result.failed:
        print(f"error: {failure}", file=sys.stderr)
    return 1 if result.failed else 0


def cmd_evaluate(a) -> int:
    from poc.train.phases import evaluate_run

    _console_logging()
    rd = _find(a.run, a.runs_dir)
    stages = evaluate_run(rd)
    print(f"re-evaluated {rd.id}: stages {', '.join(stages)}")
    return 0


def cmd_predict(a) -> int:
    """Top-k per image in input order; refused files (the Live predict page's rules) keep their place."""
    from poc.inference import load_model, predict_files

    results = predict_files(load_model(_find(a.run, a.runs_dir), a.stage), a.images, k=a.top_k,
                            explain_maps=a.explain)
    if a.json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            if "error" in r:
                print(f"{r['image']}: rejected ({r['error']})")
            else:
                print(f"{r['image']}: " + ", ".join(f"{t['class']} {t['probability']:.3f}" for t in r["top_k"]))
                if "explanation" in r:
                    print("  explanation: " + _explanation_text(r["explanation"]))
    return 2 if any("error" in r for r in results) else 0


def _explanation_text(explanation: dict) -> str:
    """"gradcam on block_12_add (4x4 map)", or why there is no map."""
    if "note" in explanation:
        return f"none ({explanation['note']})"
    h, w = explanation["grid"]
    layer = f" on {explanation['layer']}" if explanation.get("layer") else ""
    return f"{explanation['method']}{layer} ({h}x{w} map)"


def cmd_runs(a) -> int:
    from poc.analysis.leaderboard import leaderboard

    table = leaderboard(store.list_runs(a.runs_dir))
    if a.json:
        print(table.to_json(orient="records", indent=2))
    elif table.empty:
        print(f"no runs in {a.runs_dir or store.default_runs_dir()}; try: python -m poc demo")
    else:
        cols = ["id", "model", "status", "acc_tl", "acc_ft", "macro_f1"]
        print(table[cols].to_string(index=False, na_rep="-", float_format=lambda v: f"{v:.4f}"))
    return 0


def cmd_compare(a) -> int:
    from poc.analysis.compare import compare_runs, comparison_json, format_comparison

    result = compare_runs(_find(a.run_a, a.runs_dir), _find(a.run_b, a.runs_dir), stage=a.stage,
                          allow_unpaired=a.unpaired)
    print(json.dumps(comparison_json(result), indent=2) if a.json else format_comparison(result))
    return 0


def cmd_report(a) -> int:
    from poc.analysis.report import write_report

    summary = write_report([_find(ref, a.runs_dir) for ref in a.runs], a.out)
    print(json.dumps(summary, indent=2) if a.json else f"wrote {summary['out']} ({summary['bytes'] / 1e6:.1f} MB, "
          f"{len(summary['runs'])} run{'s' if len(summary['runs']) != 1 else ''})")
    return 0


def cmd_baseline(a) -> int:
    from poc.train.baselines import baseline_summary, run_baselines, summary_text

    _console_logging()
    dirs = run_baselines(data=a.data, from_run=a.from_run, model=a.model, weights=a.weights,
                         image_size=a.image_size, pixels_size=a.pixels_size, val=a.val, test=a.test,
                         seed=a.seed, runs_dir=a.runs_dir)
    rows = baseline_summary(dirs)
    print(json.dumps(rows, indent=2) if a.json else summary_text(rows))
    return 0


def cmd_demo(a) -> int:
    from poc.train.demo import run_demo

    _console_logging()
    executor = _executor(a)
    if executor.kind != "local":
        from poc.launch.remote import demo_on

        js = demo_on(executor, a.runs_dir, a.data_dir)
        if js.status != "completed":
            raise UserError(f"the demo did not complete on the cluster: {js.status} ({js.message})")
        return 0
    for rd in run_demo(a.runs_dir, a.data_dir, progress=_progress_printer("demo-data")):
        print(rd.path)
    return 0


def cmd_jobs(a) -> int:
    from poc.launch import launcher

    if a.cancel:
        launcher.cancel(a.cancel, a.runs_dir)
    rows = [{"id": js.id, "kind": js.job.kind, "status": js.status, "name": js.name, "run_id": js.run_id,
             "executor": (js.job.executor or {}).get("kind", "local"),
             "cluster_job": (js.job.executor or {}).get("job_id") if js.job.pid == 0 else None,
             "phase": js.phase, "progress": js.progress, "message": js.message}
            for js in launcher.list_jobs(a.runs_dir)]
    if a.json:
        print(json.dumps(rows, indent=2))
    for row in [] if a.json else rows:
        progress = f"{100 * row['progress']:.0f}%" if row["progress"] is not None else "-"
        print(f"{row['id']}  {row['executor']:<5} {row['status']:<11} {progress:>4}  {row['name']}"
              + (f"  ({row['message']})" if row["message"] and row["status"] != "completed" else ""))
    return 0


COMMANDS = {"demo-data": cmd_demo_data, "scan": cmd_scan, "split": cmd_split, "train": cmd_train,
            "evaluate": cmd_evaluate, "predict": cmd_predict, "runs": cmd_runs, "demo": cmd_demo,
            "baseline": cmd_baseline, "compare": cmd_compare, "report": cmd_report,
            "sweep": cmd_sweep, "jobs": cmd_jobs}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["pretrain"]:  # its own parser: a long recipe of options that only pretraining takes
        from poc.models.pretrain import main as pretrain_main

        return pretrain_main(argv[1:])
    args = build_parser().parse_args(argv)  # argparse exits 2 with its own usage message
    try:
        return COMMANDS[args.command](args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Cancelled as exc:
        print(f"run {exc} cancelled", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the user sees one line, the log keeps the traceback
        if os.environ.get("VITRINE_DEBUG"):
            traceback.print_exc()
        print(f"internal error: {type(exc).__name__}: {exc} (set VITRINE_DEBUG=1 for the traceback)",
              file=sys.stderr)
        return 1


# ---------------------------------------------------------------- helpers

def _find(ref: str, runs_dir: Path | None):
    rd = store.find_run(ref, runs_dir)
    if rd is None:
        raise UserError(f"no run {ref!r} in {runs_dir or store.default_runs_dir()}; see python -m poc runs")
    return rd


class _NoTraceback(logging.Formatter):
    """The console gets one line per event; tracebacks go to the run's train.log only."""

    def format(self, record: logging.LogRecord) -> str:
        return record.getMessage()


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time of the message (in-process callers swap it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):  # StreamHandler.__init__ assigns one; the property always answers sys.stderr
        pass


def _console_logging() -> None:
    logging.getLogger("tensorflow").setLevel(logging.ERROR)  # retracing advice and the like: not for users
    root = logging.getLogger()
    if any(isinstance(h.formatter, _NoTraceback) for h in root.handlers):
        return
    handler = _CurrentStderr()
    handler.setFormatter(_NoTraceback())
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def _progress_printer(label: str):
    """A one-line progress bar on a terminal, a line per 10% otherwise."""
    state = {"last": -1}

    def show(done: int, total: int) -> None:
        if not total:
            return
        pct = int(100 * done / total)
        if sys.stderr.isatty():
            bar = "#" * (pct // 4)
            print(f"\r{label} [{bar:<25}] {done}/{total}", end="\n" if done == total else "", file=sys.stderr)
        elif pct // 10 != state["last"] // 10 or done == total:
            print(f"{label}: {done}/{total}", file=sys.stderr)
        state["last"] = pct

    return show
