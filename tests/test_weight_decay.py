"""Weight decay on the real presets (the optimizer's own groups): Mamba's A_log / A_b_log and D, tokens
and their positions, PointMamba's order scale / shift, norms and biases are not decayed; every other
matrix is."""
import pytest

import pointmap
from pointmap.engine.optim import param_groups

TINY = dict(embed_dim=32, num_group=16, group_size=8)
UNDECAYED_MATRICES = ("A_log", "A_b_log", "cls_token", "cls_pos", "mask_token", "order_scale", "order_shift")


def _models():
    yield "hybridnet_s", pointmap.create_model("hybridnet_s", num_classes=5, layout="MT", num_heads=2, **TINY)
    yield "pointmamba", pointmap.create_model("pointmamba", num_classes=5, layout="MM", **TINY)
    yield "map3d_official", pointmap.create_model("map3d_official", num_classes=5, layout="MMMT", num_heads=2, **TINY)
    yield "pretrainer", pointmap.create_pretrainer("hybridnet_s", layout="MT", num_heads=2, decoder_heads=2, **TINY)
    yield "pointmamba pretrainer", pointmap.create_pretrainer("pointmamba", layout="MM", decoder_heads=2, **TINY)


@pytest.mark.parametrize("name,model", list(_models()), ids=lambda v: v if isinstance(v, str) else "")
def test_groups_of_real_presets(name, model):
    decay, no_decay = param_groups(model, 0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    undecayed = {names[id(p)] for p in no_decay["params"]}
    decayed = {names[id(p)] for p in decay["params"]}
    expected = {n for n, p in model.named_parameters() if p.ndim <= 1 or n.split(".")[-1] in UNDECAYED_MATRICES}
    assert undecayed == expected and decayed == set(names.values()) - expected
    mamba = [n for n in names.values() if n.endswith("A_log")]
    assert mamba  # every preset here has Mamba blocks
    assert all(n in undecayed for n in mamba) and all(n.replace("A_log", "D") in undecayed for n in mamba)
    assert any(n.endswith(("in_proj.weight", "qkv.weight")) for n in decayed)
    tokens = {n for n in undecayed if n.split(".")[-1] in ("cls_token", "cls_pos", "mask_token", "order_scale")}
    assert tokens, "the preset has a token or per-order parameter to keep undecayed"
