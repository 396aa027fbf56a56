"""Studies: several `train` runs planned as one question, and the table that answers it.

    sweep      one split and one phase 1 per seed, then one phase-2 run per cutoff started from that phase 1's
               weights (the --from-run path): "how much of the backbone should fine-tuning unfreeze?"
    seeds      one configuration repeated with other seeds on ONE split (paired runs): how much of a
               difference is training noise
    data_size  one run per --train-fraction, nested shares of one split's training images (same fingerprint):
               "does the ViT need more data than the CNN?"

With --seeds, every run of a study keeps the split seeded by --seed (recorded as `split_seed`); the listed seeds
seed the head's initial weights, augmentation and shuffling. Each run is a normal run directory whose run.json
holds a `study` block: kind, id, role (phase1 | phase2 | run), seed, split_seed, train_fraction, cutoff,
trainable_params.

Planning (`plan_sweep`, `plan_repeats`) is pure; `validate_sweep` checks a sweep's settings and every cutoff on
the model's probe before anything trains; `run_plan` trains. poc.analysis.study_results reads the finished runs
back into one table. Importing this module does not import TensorFlow.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from poc.runs import store
from poc.runs.store import RunDir
from poc.config import RunConfig
from poc.errors import Cancelled, UserError
from poc.train.plan import Checked, validate

log = logging.getLogger("poc.train.studies")

AUTO = "auto"
AUTO_COUNT = 5  # --cutoffs auto: about this many cutoffs


@dataclass(frozen=True)
class Cutoff:
    value: str  # what --fine-tune-at takes
    index: int  # backbone layers before it stay frozen
    trainable_params: int  # of a probe classifier (2 classes); run.json's study block has the real count


@dataclass
class PlannedRun:
    config: RunConfig
    study: dict  # run.json's `study` block
    split_seed: int | None  # None: the split of the run this one starts from
    base: int | None = None  # index in the plan of the run whose phase-1 weights this one starts from


@dataclass
class Plan:
    id: str
    kind: str
    runs: list[PlannedRun]


@dataclass
class StudyResult:
    plan: Plan
    runs: list[RunDir] = field(default_factory=list)  # completed, in plan order
    failed: list[str] = field(default_factory=list)  # "<run name>: <reason>" per run that failed or was skipped


# ---------------------------------------------------------------- parsing and checks (no TensorFlow)

def parse_cutoffs(text: str) -> list[str]:
    """"auto" -> ["auto"]; "a,b,c" -> ["a", "b", "c"] in --fine-tune-at syntax; UserError when empty or repeated."""
    values = [part.strip() for part in str(text or "").split(",") if part.strip()]
    if not values:
        raise UserError("--cutoffs is empty; give auto or a comma list in --fine-tune-at syntax, "
                        "e.g. block_13_expand,Conv_1 or blocks:4,blocks:8")
    if AUTO in values and len(values) > 1:
        raise UserError(f"--cutoffs {text}: auto picks the cutoffs itself; give auto alone or a list")
    repeated = sorted({v for v in values if values.count(v) > 1})
    if repeated:
        raise UserError(f"--cutoffs lists {', '.join(repeated)} more than once; list each cutoff once")
    return values


def check_seeds(seeds: list[int] | None) -> list[int] | None:
    if seeds is None:
        return None
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated or any(s < 0 for s in seeds):
        raise UserError(f"--seeds {','.join(map(str, seeds))}: give distinct seeds of 0 or more, e.g. 0,1,2")
    return list(seeds)


def check_fractions(fractions: list[float]) -> list[float]:
    repeated = sorted({f for f in fractions if fractions.count(f) > 1})
    if repeated:
        raise UserError(f"--train-fraction lists {', '.join(f'{f:g}' for f in repeated)} more than once")
    for fraction in fractions:
        RunConfig(data="", train_fraction=fraction).check_values()  # the range message names the flag
    return sorted(fractions)


def check_sweep(config: RunConfig) -> None:
    """What a sweep asks of its settings on top of a run's (`validate_sweep` checks those): pure, no model."""
    if config.fine_tune_at is not None:
        raise UserError("sweep takes its cutoffs from --cutoffs, not --fine-tune-at; drop --fine-tune-at")
    if config.ft_epochs < 1:
        raise UserError("a cutoff sweep fine-tunes: --ft-epochs must be at least 1")


def validate_sweep(config: RunConfig, text: str,
                   runs_dir: Path | str | None = None) -> tuple[Checked, list[Cutoff]]:
    """A sweep's settings and cutoffs, all checked before anything trains, for `python -m poc sweep` and the
    sidebar: `check_sweep`, the cutoff list's syntax, the one run validation (`poc.train.plan.validate`), then
    every cutoff on the model's probe that validation resolved the default cutoff on. (checked settings, cutoffs)."""
    check_sweep(config)
    values = parse_cutoffs(text)
    checked = validate(config, runs_dir)
    return checked, resolve_cutoffs(checked, values)


def new_study_id(kind: str, model: str) -> str:
    """Sortable by creation time like a run id: timestamp, kind, model, random suffix."""
    return store.new_run_id(f"{kind} {model}")


def pick_auto(choices: list, count: int = AUTO_COUNT) -> list:
    """About `count` cutoffs evenly spread over phase-2 trainable parameters, fewest first: for `count` targets
    evenly spaced from the smallest to the largest trainable count, the not yet picked choice nearest to each.
    `choices` are poc.models.cutoffs.CutoffChoice (value, trainable_params), the last one freezing the whole
    backbone; it is left out because the sweep's phase 1 already trains the head alone."""
    pool: dict[int, object] = {}
    for choice in choices[:-1]:
        pool.setdefault(int(choice.trainable_params), choice)  # one choice per distinct count
    ranked = [pool[k] for k in sorted(pool)]
    if len(ranked) <= count:
        return ranked
    picked: list = []
    for target in np.linspace(ranked[0].trainable_params, ranked[-1].trainable_params, count):
        free = [c for c in ranked if c not in picked]
        picked.append(min(free, key=lambda c: abs(c.trainable_params - target)))
    return sorted(picked, key=lambda c: c.trainable_params)


def resolve_cutoffs(checked: Checked, values: list[str]) -> list[Cutoff]:
    """The cutoffs `values` name (["auto"] or a list, see parse_cutoffs), each resolved on the model's probe
    (`checked.probe`; a hub model's is built here) and counted. UserError naming the bad cutoff."""
    from poc.models import probe as build_probe
    from poc.models.cutoffs import cutoff_choices, freeze_backbone, resolve_cutoff, trainable_count, unfreeze_from

    spec = checked.spec
    probe = checked.probe if checked.probe is not None else build_probe(checked.config.model, checked.image_size)
    if values == [AUTO]:
        return [Cutoff(c.value, c.frozen_layers, c.trainable_params) for c in pick_auto(cutoff_choices(probe, spec))]
    backbone, found = probe.get_layer("backbone"), []
    try:
        for value in values:
            try:
                index = resolve_cutoff(backbone, value, spec)
            except UserError as exc:
                raise UserError(str(exc).replace("--fine-tune-at", "--cutoffs")) from None
            same = [c.value for c in found if c.index == index]
            if same:
                raise UserError(f"--cutoffs {same[0]} and {value} are the same cutoff (backbone layer {index}); "
                                "list each once")
            unfreeze_from(probe, index)
            found.append(Cutoff(value, index, trainable_count(probe)))
    finally:
        freeze_backbone(probe)
    return found


# ---------------------------------------------------------------- plans (pure)

def _name(config: RunConfig, what: str, seed: int | None) -> str:
    return f"{config.name or config.model} · {what}" + (f" · seed {seed}" if seed is not None else "")


def plan_sweep(config: RunConfig, cutoffs: list[Cutoff], seeds: list[int] | None = None,
               study_id: str | None = None) -> Plan:
    """Per seed: a phase-1 run (phase 2 skipped; none when config.from_run names an existing one) and one
    phase-2 run per cutoff from it. All share one split: the one seeded by config.seed, or the source run's."""
    check_sweep(config)
    seeds = check_seeds(seeds) or [config.seed]
    study_id = study_id or new_study_id("sweep", config.model)
    split_seed = None if config.from_run else config.seed
    runs: list[PlannedRun] = []
    for seed in seeds:
        shown = seed if len(seeds) > 1 else None  # the seed is in run names only when the study varies it
        common = {"kind": "sweep", "id": study_id, "seed": seed, "split_seed": split_seed,
                  "train_fraction": config.train_fraction}
        base = None
        if not config.from_run:
            phase1 = dataclasses.replace(config, seed=seed, ft_epochs=0, name=_name(config, "phase 1", shown))
            runs.append(PlannedRun(phase1, {**common, "role": "phase1", "cutoff": None}, split_seed))
            base = len(runs) - 1
        for cutoff in cutoffs:
            phase2 = dataclasses.replace(config, seed=seed, fine_tune_at=cutoff.value,
                                         name=_name(config, f"cutoff {cutoff.value}", shown))
            runs.append(PlannedRun(phase2, {**common, "role": "phase2", "cutoff": cutoff.value,
                                            "cutoff_index": cutoff.index}, None, base))
    return Plan(study_id, "sweep", runs)


def plan_repeats(config: RunConfig, seeds: list[int] | None = None, fractions: list[float] | None = None,
                 study_id: str | None = None) -> Plan:
    """One two-phase run per (train fraction, seed), all on the split seeded by config.seed. Kind data_size
    when several fractions are listed, else seeds."""
    seeds = check_seeds(seeds) or [config.seed]
    fractions = check_fractions(fractions or [config.train_fraction])
    if config.from_run and fractions != [config.train_fraction]:
        raise UserError("--train-fraction lists are for new runs: with --from-run the split comes from that run")
    kind = "data_size" if len(fractions) > 1 else "seeds"
    study_id = study_id or new_study_id(kind, config.model)
    split_seed = None if config.from_run else config.seed
    runs = []
    for fraction in fractions:
        for seed in seeds:
            what = f"{fraction:.0%} of train" if kind == "data_size" else "repeat"
            shown = seed if kind == "seeds" or len(seeds) > 1 else None
            run_config = dataclasses.replace(config, seed=seed, train_fraction=fraction,
                                             name=_name(config, what, shown))
            run_config.check_values()
            runs.append(PlannedRun(run_config, {"kind": kind, "id": study_id, "role": "run", "seed": seed,
                                                "split_seed": split_seed, "train_fraction": fraction}, split_seed))
    return Plan(study_id, kind, runs)


# ---------------------------------------------------------------- running

def run_plan(plan: Plan, runs_dir: Path | str | None = None) -> StudyResult:
    """Train the plan's runs in order. A failed run is recorded (its run.json says why) and the study goes on;
    runs that start from a failed phase 1 are skipped. Bad input of the first run (nothing trained yet) and a
    cancellation stop the study."""
    from poc.train.training import train

    result = StudyResult(plan)
    done: dict[int, RunDir] = {}
    for i, planned in enumerate(plan.runs):
        config = dataclasses.replace(planned.config)
        if planned.base is not None:
            if planned.base not in done:
                result.failed.append(f"{config.name}: skipped, its phase-1 run failed")
                continue
            config.from_run = done[planned.base].id
        log.info("study %s: run %d of %d, %s", plan.id, i + 1, len(plan.runs), config.name)
        try:
            done[i] = train(config, runs_dir, study=planned.study, split_seed=planned.split_seed)
        except (Cancelled, KeyboardInterrupt):
            raise
        except UserError as exc:
            if not done and not result.failed:
                raise  # the first run's input is wrong: every other run would fail the same way
            result.failed.append(f"{config.name}: {exc}")
        except Exception as exc:  # noqa: BLE001 - the run recorded its failure; the other runs still answer
            result.failed.append(f"{config.name}: {type(exc).__name__}: {exc}")
            log.error("study %s: run %s failed: %s", plan.id, config.name, exc)
        finally:
            _release_models()
    result.runs = list(done.values())
    return result


def _release_models() -> None:
    """Each run builds its own model; dropping the finished ones keeps a long study's memory flat."""
    import keras

    keras.backend.clear_session()
