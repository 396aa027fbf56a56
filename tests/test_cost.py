"""Model cost (poc.analysis.cost): multiply-add estimates against published counts, and what a run directory records."""

from __future__ import annotations

import pytest

from poc.runs import store
from poc.analysis.cost import CNN_REFERENCE_MACS, estimate_macs, model_cost


def test_every_registered_vit_has_a_closed_form_estimate():
    from poc.models import MODELS

    vits = [name for name, spec in MODELS.items() if spec.family == "vit"]
    assert vits and all(estimate_macs(name, 224, 10)[1] == "closed form over the ViT's layers" for name in vits)


@pytest.mark.parametrize("name, published", [("vit_b16", 17.58e9), ("vit_b32", 4.41e9), ("vit_s16", 4.61e9),
                                             ("vit_ti16", 1.26e9)])
def test_vit_estimate_matches_published_multiply_adds_at_224(name, published):
    macs, method = estimate_macs(name, 224, 1000)  # timm's GMACs for the ImageNet-1k models
    assert macs == pytest.approx(published, rel=0.01) and "closed form" in method


def test_cnn_estimate_scales_the_published_count_with_input_area():
    reference, macs_224 = CNN_REFERENCE_MACS["mobilenet_v2"]
    assert estimate_macs("mobilenet_v2", reference)[0] == macs_224
    assert estimate_macs("mobilenet_v2", reference // 2)[0] == pytest.approx(macs_224 / 4)


def test_an_architecture_without_an_estimate_says_not_computed():
    macs, method = estimate_macs("hub:/models/x", 224)
    assert macs is None and method.startswith("not computed")


def _run(tmp_path, metrics: dict | None = None, weights_bytes: int | None = None) -> store.RunDir:
    rd = store.RunDir(tmp_path / "run").create()
    rd.write_run({"id": "run", "model": "vit_ti16", "image_size": 32, "class_names": ["a", "b"], "final_stage": "ft",
                  "params": {"total": 100, "trainable_tl": 10, "trainable_ft": 60, "size_mb": 0.0004}})
    if metrics is not None:
        store.write_json(rd.eval_file("ft", "metrics"), metrics)
    if weights_bytes is not None:
        rd.weights.write_bytes(b"\0" * weights_bytes)
    return rd


def test_cost_reads_parameters_weights_file_and_a_recorded_latency(tmp_path):
    cost = model_cost(_run(tmp_path, {"accuracy": 0.5, "latency_ms": 3.25}, weights_bytes=2_500_000))
    assert (cost["total"], cost["trainable_tl"], cost["trainable_ft"]) == (100, 10, 60)
    assert cost["weights_mb"] == pytest.approx(2.5) and cost["latency_ms"] == 3.25
    assert cost["macs"] == pytest.approx(estimate_macs("vit_ti16", 32, 2)[0])


def test_unmeasured_latency_and_missing_weights_read_as_unknown(tmp_path):
    cost = model_cost(_run(tmp_path, {"accuracy": 0.5}))
    assert cost["latency_ms"] is None and cost["weights_mb"] is None
