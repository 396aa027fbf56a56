"""Attention rollout (arXiv 2005.00928) on hand-worked matrices; numpy only."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from poc.explain.rollout import attention_rollout


def random_attention(layers=3, batch=2, heads=4, tokens=17, seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(layers, batch, heads, tokens, tokens))
    weights = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)  # rows sum to 1, like softmax
    return list(weights)


def one_layer(cls_row, tokens=5):
    """(1, 1, T, T) attention whose other rows attend to themselves; the class token's row is given."""
    a = np.eye(tokens)
    a[0] = cls_row
    return a[None, None]


def test_rollout_shape_and_range():
    maps = attention_rollout(random_attention())
    assert maps.shape == (2, 4, 4)
    assert maps.min() >= 0
    np.testing.assert_allclose(maps.max(axis=(1, 2)), 1.0)


def test_one_layer_rollout_by_hand():
    # class token row [0.2, 0.4, 0.1, 0.2, 0.1] + identity, halved: [0.6, 0.2, 0.05, 0.1, 0.05];
    # patches [0.2, 0.05, 0.1, 0.05] scaled to max 1: [1, 0.25, 0.5, 0.25] on a 2 x 2 grid.
    maps = attention_rollout([one_layer([0.2, 0.4, 0.1, 0.2, 0.1])])
    np.testing.assert_allclose(maps, [[[1.0, 0.25], [0.5, 0.25]]])


def test_heads_are_averaged_before_the_residual():
    # heads [0, 0.8, 0, 0, 0.2] and [0, 0, 0.8, 0, 0.2] average to [0, 0.4, 0.4, 0, 0.2]
    # -> patches [0.2, 0.2, 0, 0.1] -> [1, 1, 0, 0.5].
    heads = np.concatenate([one_layer([0, 0.8, 0, 0, 0.2]), one_layer([0, 0, 0.8, 0, 0.2])], axis=1)
    np.testing.assert_allclose(attention_rollout([heads]), [[[1.0, 1.0], [0.0, 0.5]]])
    # max fusion: [0, 0.8, 0.8, 0, 0.2] + identity, renormalised -> patches [0.8, 0.8, 0, 0.2] / 0.8
    np.testing.assert_allclose(attention_rollout([heads], head_fusion="max"), [[[1.0, 1.0], [0.0, 0.25]]])


def test_two_layers_multiply_first_to_last():
    # Layer 1 as above (M1, class row [0.6, 0.2, 0.05, 0.1, 0.05], other rows e_i).
    # Layer 2 attends uniformly: M2 = (U + I) / 2, so row 0 of M2 @ M1 = 0.5 * M1[0] + 0.5 * mean of M1's rows.
    m1_row0 = np.array([0.6, 0.2, 0.05, 0.1, 0.05])
    column_mean = (m1_row0 + np.array([0, 1, 1, 1, 1])) / 5  # rows 1..4 of M1 are identity rows
    expected = 0.5 * m1_row0 + 0.5 * column_mean
    uniform = np.full((1, 1, 5, 5), 0.2)
    maps = attention_rollout([one_layer([0.2, 0.4, 0.1, 0.2, 0.1]), uniform])
    np.testing.assert_allclose(maps[0].ravel(), expected[1:] / expected[1:].max())


def test_identity_attention_gives_a_zero_map_not_nan():
    maps = attention_rollout([np.eye(5)[None, None]])
    assert np.all(maps == 0)


@pytest.mark.parametrize(
    "attentions",
    [
        [],
        [np.ones((1, 2, 17, 17)), np.ones((1, 3, 17, 17))],  # head count differs between layers
        [np.ones((1, 2, 17, 16))],  # not square
        [np.ones((2, 17, 17))],  # missing the batch axis
        [np.ones((1, 2, 18, 18))],  # 17 patches are not a square grid
    ],
    ids=["empty", "layers-differ", "not-square", "rank-3", "no-grid"],
)
def test_inconsistent_shapes_raise_value_error(attentions):
    with pytest.raises(ValueError):
        attention_rollout(attentions)


def test_unknown_head_fusion_is_rejected():
    with pytest.raises(ValueError, match="head_fusion='median'"):
        attention_rollout(random_attention(), head_fusion="median")


def test_rollout_module_does_not_import_tensorflow():
    code = "import sys, poc.explain.rollout; assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])
