"""The ViT variant table (poc.models.vit_variants): one name decoded once into sizes that everyone reads."""

import pytest

from poc.models import MODELS
from poc.models.vit_variants import VIT_VARIANTS, ViTConfig, decode


def test_a_variant_name_decodes_to_the_papers_sizes():
    # arXiv 2010.11929 Table 1: ViT-Base has width 768, 12 layers, 12 heads, MLP 3072.
    assert decode("B/32") == ViTConfig(patch=32, width=768, depth=12, heads=12, mlp=3072)


def test_the_patch_size_comes_from_the_name():
    assert decode("Ti/8").patch == 8 and decode("Ti/16").patch == 16


def test_a_malformed_variant_name_is_refused_with_the_name():
    with pytest.raises(ValueError, match="'L/14'"):
        decode("L/14")


def test_every_registered_vit_has_a_row_in_the_table():
    assert sorted(n for n, spec in MODELS.items() if spec.family == "vit") == sorted(VIT_VARIANTS)


def test_the_registry_takes_its_patch_size_from_the_table():
    assert MODELS["vit_ti8"].patch == 8 and MODELS["vit_b32"].patch == 32


def test_the_registry_describes_a_vit_with_the_tables_numbers():
    assert MODELS["vit_s16"].description == "ViT-S/16, 12 blocks, width 384"
