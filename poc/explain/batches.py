"""Raw-pixel batches for the explanation methods, so that memory follows the batch size."""

from __future__ import annotations

import numpy as np

EXPLAIN_BATCH = 32  # images per explanation batch at most; big ViTs lower it to fit (poc.explain.attention)


def batches(images, batch_size: int = 32):
    """Raw-pixel batches of at most `batch_size` images, from a tf.data dataset of (images, labels) or of
    images, or from an array. A dataset's larger batches are cut, so memory follows `batch_size`."""
    if isinstance(images, np.ndarray):
        for start in range(0, len(images), batch_size):
            yield images[start:start + batch_size]
        return
    for batch in images:
        batch = batch[0] if isinstance(batch, (tuple, list)) else batch
        for start in range(0, len(batch), batch_size):
            yield batch[start:start + batch_size]
