"""tf.distribute for training: one strategy per run, chosen by `--distribute`.

- `none`: the default device (one GPU, or the CPU).
- `mirrored`: `MirroredStrategy` over every local GPU (synchronous data parallelism, one model copy per GPU).
  Without GPUs it mirrors over the logical CPU devices, which is how the tests run it: set
  `VITRINE_CPU_DEVICES=2` to split the CPU in two before TensorFlow starts.
- `multiworker`: `MultiWorkerMirroredStrategy` over the machines listed in `TF_CONFIG`, one process per
  machine. Keras 3's `fit` fails under this strategy (keras-team/keras#20585), so such runs train through
  `poc.train.multiworker.fit`, which also says which worker writes the run.

`--batch-size` is per replica: the global batch is batch size x replicas. The learning rate is not scaled
(Adam is fairly insensitive to batch size at these sizes); scale `--lr-tl` / `--lr-ft` yourself for large
replica counts if the learning curves call for it.
"""

from __future__ import annotations

import contextlib
import os


def split_cpu_from_env() -> int:
    """Split the CPU into $VITRINE_CPU_DEVICES logical devices (must run before TensorFlow's first op)."""
    import tensorflow as tf

    count = int(os.environ.get("VITRINE_CPU_DEVICES", "0") or 0)
    if count > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        try:
            tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)
        except RuntimeError:  # already initialised: keep what exists
            pass
    return max(count, 1)


def make_strategy(kind: str):
    """The tf.distribute strategy for `kind`, or None for `none`."""
    import tensorflow as tf

    from poc.errors import UserError

    if kind == "none":
        return None
    if kind == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices=devices)
    if kind == "multiworker":
        from poc.train.multiworker import cluster_task

        cluster_task()  # a missing or malformed TF_CONFIG is refused with a message before TensorFlow waits
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise UserError(f"--distribute {kind!r}: choose from none, mirrored, multiworker")


def scope(strategy):
    """Variables created inside (the model, the optimizer) are mirrored across the strategy's replicas."""
    return strategy.scope() if strategy is not None else contextlib.nullcontext()


def fit(model, strategy, data, **fit_args) -> None:
    """`model.fit` with `fit_args`, or the multi-worker loop where Keras' own fit cannot run."""
    import tensorflow as tf

    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        from poc.train import multiworker

        multiworker.fit(model, strategy, data, **fit_args)
    else:
        model.fit(data, shuffle=False, **fit_args)  # batches arrive shuffled by the pipeline


def replicas(strategy) -> int:
    return strategy.num_replicas_in_sync if strategy is not None else 1


def describe(strategy) -> dict:
    """What run.json records: the strategy, its replicas, and this process's task in a multi-worker cluster."""
    if strategy is None:
        return {"strategy": "none", "replicas": 1}
    import tensorflow as tf

    multiworker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)  # its class: CollectiveAllReduce...
    name = "MultiWorkerMirroredStrategy" if multiworker else type(strategy).__name__
    out = {"strategy": name, "replicas": strategy.num_replicas_in_sync}
    if "TF_CONFIG" in os.environ:
        from poc.train.multiworker import cluster_task

        kind, index, _ = cluster_task()
        out["task"] = f"{kind}:{index}"
    return out


def check_even_batches(counts: dict[str, int], batch_size: int, strategy) -> None:
    """Refuse before training when a split's last batch would not split evenly across the replicas: Keras 3
    fails on such a batch mid-run (an AddN shape error; keras-team/keras#21069)."""
    from poc.errors import UserError

    n_replicas = replicas(strategy)
    if n_replicas == 1:
        return
    global_batch = batch_size * n_replicas
    uneven = {s: n for s, n in counts.items() if n % global_batch % n_replicas}
    if uneven:
        sizes = ", ".join(f"{s} {n} images (last batch {n % global_batch})" for s, n in uneven.items())
        raise UserError(f"--distribute over {n_replicas} replicas with --batch-size {batch_size}: {sizes} would "
                        f"not split evenly across the replicas, which Keras 3 cannot run (keras-team/keras#21069). "
                        f"Choose a --batch-size whose global batch ({n_replicas} x batch) divides each split, or "
                        f"split sizes that are multiples of {n_replicas}, or --distribute none")
