"""`describe`: what `python -m benchmark methods` lists."""

from __future__ import annotations

import methods
from tests.conftest import CODET5_CONFIG


def test_fields_without_a_model_config():
    rows = {r["name"]: r for r in methods.describe()}
    assert set(rows) >= {"lora", "full_layer", "hybrid", "ffn_expansion", "peft"}
    lora = {f["name"]: f for f in rows["lora"]["fields"]}
    assert lora["r"]["default"] == 24 and lora["r"]["type"] == "int" and lora["r"]["help"]
    assert lora["target_modules"]["default"] == ["q", "k", "v", "o"]
    assert all(f["help"] for row in rows.values() for f in row["fields"])
    assert rows["lora"]["trainable"] is None


def test_counts_every_method_on_the_codet5_config():
    rows = {r["name"]: r for r in methods.describe(str(CODET5_CONFIG))}
    expected = {
        "lora": 1_769_472,
        "full_layer": 3_146_752,
        "hybrid": 4_916_224,
        "ffn_expansion": 6_291_456,
    }
    for name, count in expected.items():
        assert rows[name]["trainable"] == count
        assert rows[name]["share"] == count / rows[name]["total"]
    assert rows["ffn_expansion"]["total"] == 66_783_744
    assert rows["peft"]["trainable"] is None and "config" in rows["peft"]["note"]
