"""What a model costs: parameters (total, trainable per phase), weights on disk, inference latency, multiply-adds.

Read from run.json (what training counted), the run directory's weights file and, when evaluation recorded one,
a measured latency; the multiply-adds are a closed-form estimate from the registered architecture (a ViT's
sizes from poc.models.vit_variants) and the run's input size. TensorFlow-free, so the dashboard shows costs
without building a model.
"""

from __future__ import annotations

import pandas as pd

from poc.models.vit_variants import VIT_VARIANTS  # TensorFlow-free: the ViT sizes' one table
from poc.runs import store
from poc.runs.status import final_stage_of
from poc.runs.store import RunDir, as_number

# Published multiply-adds (MACs) at the reference input size, 1000-class head included; a convolutional
# network's MACs scale with the input area (every feature map shrinks with the input), so a run at S px costs
# about MACs * (S / reference)^2.
CNN_REFERENCE_MACS = {
    "mobilenet_v2": (224, 300e6),  # Sandler et al. 2018 (arXiv 1801.04381)
    "resnet50": (224, 4.1e9),  # He et al. 2015 (arXiv 1512.03385); torchvision's 4.09 G
    "vgg16": (224, 15.5e9),  # Simonyan & Zisserman 2014; torchvision's 15.47 G
    "inception_resnet_v2": (299, 13.2e9),  # Szegedy et al. 2016; timm's 13.18 G at 299 px
    "efficientnet_b0": (224, 0.39e9),  # Tan & Le 2019 (arXiv 1905.11946)
}
LATENCY_KEY = "latency_ms"  # per image, in eval/<stage>/metrics.json or run.json, when evaluation measured it
COLUMNS = ["id", "model", "image_size", "total", "trainable_tl", "trainable_ft", "size_mb", "weights_mb",
           "latency_ms", "macs", "macs_method"]


def vit_macs(patch: int, width: int, depth: int, mlp: int, image_size: int, num_classes: int) -> float:
    """Multiply-adds of one ViT forward pass (arXiv 2010.11929): patch embedding, per encoder block the q/k/v
    and output projections, the MLP and the two attention products (QK^T and attention x V), then the head.
    LayerNorms, softmax and GELU are left out (a few percent)."""
    patches = (image_size // patch) ** 2
    tokens = patches + 1  # + the class token
    embed = patches * patch * patch * 3 * width
    block = tokens * (4 * width * width + 2 * width * mlp) + 2 * tokens * tokens * width
    return float(embed + depth * block + width * num_classes)


def estimate_macs(model: str | None, image_size, num_classes: int = 0) -> tuple[float | None, str]:
    """(multiply-adds of one image, how they were obtained); (None, why) for a model without an estimate."""
    size = as_number(image_size)
    if not model or size is None:
        return None, "not computed (model or image size unknown)"
    if model in VIT_VARIANTS:
        vit = VIT_VARIANTS[model]
        return (vit_macs(vit.patch, vit.width, vit.depth, vit.mlp, int(size), num_classes),
                "closed form over the ViT's layers")
    if model in CNN_REFERENCE_MACS:
        reference, macs = CNN_REFERENCE_MACS[model]
        return macs * (size / reference) ** 2, f"published count at {reference} px, scaled by input area"
    return None, "not computed (no estimate for this architecture)"


def _weights_mb(rd: RunDir) -> float | None:
    try:
        return rd.weights.stat().st_size / 1e6
    except OSError:
        return None


def _latency_ms(rd: RunDir, info: dict) -> float | None:
    """The per-image latency evaluation measured: the final stage's metrics.json, else run.json."""
    final = final_stage_of(rd, info)
    metrics = store.read_metrics(rd, final)[0] if final else None
    if metrics and as_number(metrics.get(LATENCY_KEY)) is not None:
        return as_number(metrics[LATENCY_KEY])
    return as_number(info.get(LATENCY_KEY))


def model_cost(rd: RunDir) -> dict:
    """One run's cost (COLUMNS): parameters from run.json, `size_mb` the float32 parameters, `weights_mb` the
    saved weights file, `latency_ms` per image when measured (else None), `macs` multiply-adds per image."""
    info = store.read_json(rd.run_json) or {}
    params = info.get("params") if isinstance(info.get("params"), dict) else {}
    classes = info.get("class_names") if isinstance(info.get("class_names"), list) else []
    image_size = info.get("image_size", (info.get("config") or {}).get("image_size"))
    macs, method = estimate_macs(info.get("model"), image_size, len(classes))
    return {"id": rd.id, "model": info.get("model"), "image_size": as_number(image_size),
            "total": as_number(params.get("total")), "trainable_tl": as_number(params.get("trainable_tl")),
            "trainable_ft": as_number(params.get("trainable_ft")), "size_mb": as_number(params.get("size_mb")),
            "weights_mb": _weights_mb(rd), "latency_ms": _latency_ms(rd, info), "macs": macs,
            "macs_method": method}


def cost_table(rds: list[RunDir]) -> pd.DataFrame:
    """model_cost of each run, one row each (COLUMNS); numbers are floats, NaN when unknown."""
    table = pd.DataFrame([model_cost(rd) for rd in rds], columns=COLUMNS)
    for column in COLUMNS[2:-1]:
        table[column] = pd.to_numeric(table[column], errors="coerce").astype(float)
    return table
