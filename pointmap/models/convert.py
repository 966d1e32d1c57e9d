"""Peer checkpoint formats → pointmap names: Point-MAE, PointMamba, the released MAP 3D code and Mamba3D, the
released MAP 2D code and Mamba-Reg.

Each converter renames one peer's ``base_model`` state dict (pretraining or finetuning class, with or
without DDP's ``module.`` prefix already removed) to the names of pointmap's classifier / pretrainer
(``encoder.*``, ``head.*``, ``cls_token``, ``decoder.*``, ...). A name it does not know is kept as it is,
so that it surfaces as an unexpected key. :func:`detect_format` tells the formats apart by their keys.

| format | peer classes | pointmap preset |
| --- | --- | --- |
| ``point_mae`` | Point-MAE ``PointTransformer``, ``Point_MAE``, part segmentation ``get_model`` (``segmentation/models/pt.py``) | ``pointmae`` (part segmentation: ``seg_head="point_mae"``) |
| ``pointmamba`` | PointMamba ``PointMambaScan``, ``Point_MAE_Mamba_serializationV2`` | ``pointmamba`` (pretraining: ``decoder_type="mamba"``) |
| ``map3d`` | MAP 3D release ``Mamba3D``, ``Point_MAE`` of ``PointMAP/Mamba3D.py``; Mamba3D's own ``Mamba3D`` (``models/Mamba3D.py``) | ``map3d_official``, ``mamba3d`` |
| ``map2d`` | MAP 2D release ``VisionMamba`` (``models_mamba.py``, ``{"model": ...}`` of its main.py); Mamba-Reg's ``VisionMamba`` | ``map_*_patch16_224``, ``mambar_*_patch16_224`` |

The ``map3d`` format covers both Mamba3D classes: MAP's file is Mamba3D's plus the attention blocks
(``blocks.blocks_vit.*``), so a Mamba3D checkpoint is a MAP 3D checkpoint without them, and it loads whole
into ``mamba3d`` (layout ``"M" * 12``; the blocks are placed by the target's layout).
"""  # noqa: E501  (the table of formats: one row a line)
import re
from typing import Callable, Dict, List, Optional, Tuple, Union

import torch

from ..errors import UserError

State = Dict[str, torch.Tensor]
Repl = Union[str, Callable[[re.Match], str]]  # a re.sub replacement
_ENC = r"^(?:MAE_encoder\.)?"  # pretraining classes keep the encoder under MAE_encoder

# Rules shared by the three peers (they all start from Point-MAE's code): first match wins.
_COMMON: List[Tuple[str, str]] = [
    (_ENC + r"encoder\.(first_conv|second_conv)\.", r"encoder.tokenizer.\1."),
    (_ENC + r"pos_embed\.", "encoder.pos_embed."),
    (_ENC + r"(cls_token|cls_pos)$", r"\1"),
    (r"^cls_head_finetune\.", "head."),
    (r"^MAE_decoder\.blocks\.(\d+)\.attn\.", r"decoder.blocks.\1.mixer."),
    (r"^MAE_decoder\.", "decoder."),
    (r"^increase_dim\.0\.", "predictor."),
    (r"^(mask_token|decoder_pos_embed\..*)$", r"\1"),
]

_POINT_MAE: List[Tuple[str, Repl]] = [
    (_ENC + r"blocks\.blocks\.(\d+)\.attn\.", r"encoder.blocks.\1.mixer."),
    (_ENC + r"blocks\.blocks\.(\d+)\.", r"encoder.blocks.\1."),
    (_ENC + r"norm\.", "encoder.norm."),
    # the part-segmentation model (segmentation/models/pt.py) → PointMAEPartSegmenter's head: its
    # propagation and final MLP are (Conv1d, BN, ReLU[, Dropout]) runs of pointmap's point_mlp
    (r"^label_conv\.", "head.label_conv."),
    (r"^propagation_0\.mlp_(convs|bns)\.(\d+)\.",
     lambda m: f"head.propagation.{3 * int(m.group(2)) + (m.group(1) == 'bns')}."),
    (r"^convs1\.", "head.mlp.0."), (r"^bns1\.", "head.mlp.1."), (r"^convs2\.", "head.mlp.4."),
    (r"^bns2\.", "head.mlp.5."), (r"^convs3\.", "head.mlp.7."),
] + _COMMON


def _mixer_model(source: str, target: str) -> List[Tuple[str, str]]:
    """PointMamba's ``MixerModel`` (``layers.i.norm``, ``layers.i.mixer``, ``norm_f``) under ``source`` →
    pointmap's block list and final norm under ``target``."""
    return [(source + r"blocks\.layers\.(\d+)\.norm\.", target + r".blocks.\1.norm1."),
            (source + r"blocks\.layers\.(\d+)\.mixer\.", target + r".blocks.\1.mixer."),
            (source + r"blocks\.norm_f\.", target + ".norm.")]


# PointMamba's pretraining decoder is a MixerModel too: pointmap's MAPDecoder(block_type="mamba").
_POINTMAMBA: List[Tuple[str, str]] = _mixer_model(_ENC, "encoder") + _mixer_model(r"^MAE_decoder\.", "decoder") + _COMMON

# MAP 3D: blocks.blocks.i are the Mamba3D blocks, blocks.blocks_vit.j the attention blocks; their places
# in pointmap's single block list come from the target's layout ({M} and {T} below).
_MAP3D: List[Tuple[str, str]] = [
    (_ENC + r"blocks\.blocks\.(\d+)\.(norm1|norm2)\.", r"encoder.blocks.{M\1}.\2."),
    (_ENC + r"blocks\.blocks\.(\d+)\.lfa\.", r"encoder.blocks.{M\1}.lfa."),
    (_ENC + r"blocks\.blocks\.(\d+)\.mixer\.", r"encoder.blocks.{M\1}.mlp."),
    (_ENC + r"blocks\.blocks_vit\.(\d+)\.(norm1|norm2)\.", r"encoder.blocks.{T\1}.\2."),
    (_ENC + r"blocks\.blocks_vit\.(\d+)\.lfa\.", r"encoder.blocks.{T\1}.lfa."),
    (_ENC + r"blocks\.blocks_vit\.(\d+)\.mixer\.attn\.", r"encoder.blocks.{T\1}.mlp.mixer."),
    (_ENC + r"blocks\.blocks_vit\.(\d+)\.mixer\.", r"encoder.blocks.{T\1}.mlp."),
    (_ENC + r"norm\.", "encoder.norm."),
] + _COMMON
# The local-norm-pooling module (the release's ``lfa``) → pointmap's LocalNormPool, the blocks' ``mixer``.
_LNP = [(r"\.lfa\.lga\.affine_alpha_feat$", ".mixer.alpha"), (r"\.lfa\.lga\.affine_beta_feat$", ".mixer.beta"),
        (r"\.lfa\.pre_norm_ft\.", ".mixer.norm."), (r"\.lfa\.mlp\.share_mlp\.", ".mixer.proj.")]


def _rename(name: str, rules: List[Tuple[str, Repl]]) -> str:
    for pattern, repl in rules:
        if re.match(pattern, name):
            return re.sub(pattern, repl, name)
    return name


def _conv_to_linear(state: State) -> State:
    """Kernel-1 Conv1d weights (out, in, 1) that pointmap holds as Linear: the predictor, LNP's proj."""
    return {k: (v.squeeze(-1) if v.dim() == 3 and (k.startswith("predictor.") or k.endswith("mixer.proj.weight"))
                else v) for k, v in state.items()}


def point_mae_to_pointmap(state: State, layout: Optional[str] = None) -> State:
    """Point-MAE names → pointmap's: ``base_model`` of its classifier / pretrainer (classifier / pretrainer
    level), or ``model_state_dict`` of its part-segmentation model (→ :class:`PointMAEPartSegmenter`)."""
    return _conv_to_linear({_rename(k, _POINT_MAE): v for k, v in state.items()})


def pointmamba_to_pointmap(state: State, layout: Optional[str] = None) -> State:
    """PointMamba ``base_model`` names → pointmap's. The per-order ``OrderScale_gamma_i`` / ``_beta_i``
    vectors become rows of ``encoder.order_scale`` / ``encoder.order_shift``."""
    out, scale = {}, {}
    for k, v in state.items():
        m = re.match(_ENC + r"OrderScale_(gamma|beta)_(\d+)$", k)
        if m:
            scale.setdefault(m.group(1), {})[int(m.group(2))] = v
        else:
            out[_rename(k, _POINTMAMBA)] = v
    for kind, name in (("gamma", "encoder.order_scale"), ("beta", "encoder.order_shift")):
        rows = scale.get(kind, {})
        if rows:
            if sorted(rows) != list(range(1, len(rows) + 1)):
                raise UserError(f"PointMamba checkpoint: OrderScale_{kind}_* are numbered {sorted(rows)}, "
                                 f"expected 1..{len(rows)}")
            out[name] = torch.stack([rows[i] for i in sorted(rows)])
    return _conv_to_linear(out)


def map3d_positions(layout: str) -> Dict[str, List[int]]:
    """Index in pointmap's block list of the i-th Mamba3D block (``M``) and the j-th attention block (``T``)."""
    return {letter: [i for i, c in enumerate(layout) if c == letter] for letter in "MT"}


def map3d_to_pointmap(state: State, layout: Optional[str] = None) -> State:
    """Released MAP 3D / Mamba3D ``base_model`` names → pointmap's. ``layout`` is the target's block
    layout (default: the file's own, a ``T`` after every third ``M`` when it has attention blocks, as the
    MAP release, else ``M`` only, as Mamba3D); the file's i-th Mamba3D block and j-th attention block go to
    the i-th ``M`` and j-th ``T`` of it. LNP's (1, 1, 1, 2C) affine vectors become (2C,)."""
    if layout is None:
        n = 1 + max([int(m.group(1)) for k in state for m in [re.search(r"blocks\.blocks\.(\d+)\.", k)] if m] or [0])
        vit = any(re.search(r"blocks\.blocks_vit\.\d+\.", k) for k in state)
        layout = "".join("MT" if vit and (i + 1) % 3 == 0 else "M" for i in range(n))
    where = map3d_positions(layout)

    def place(m: re.Match) -> str:
        letter, i = m.group(1), int(m.group(2))
        if i >= len(where[letter]):
            return f"<{letter}{i}: beyond layout {layout}>"  # no such block: an unexpected key
        return str(where[letter][i])

    out = {}
    for k, v in state.items():
        new = re.sub(r"\{([MT])(\d+)\}", place, _rename(k, _MAP3D))
        for pattern, repl in _LNP:
            new = re.sub(pattern, repl, new)
        if new.endswith((".mixer.alpha", ".mixer.beta")):
            v = v.reshape(-1)
        out[new] = v
    return _conv_to_linear(out)


# MAP 2D: layers.i are the Mamba layers, blocks.k the attention block run on the output of the k-th layer that
# has one ({A\1}: placed by the target's layout, "A" = a Mamba layer followed by an attention block).
_MAP2D: List[Tuple[str, str]] = [
    (r"^(patch_embed\.|pos_embed$)", r"encoder.\1"),
    (r"^layers\.(\d+)\.norm\.", r"encoder.blocks.\1.norm1."),
    (r"^layers\.(\d+)\.mixer\.", r"encoder.blocks.\1.mixer."),
    (r"^blocks\.(\d+)\.attn\.", r"encoder.blocks.{A\1}.attn_block.mixer."),
    (r"^blocks\.(\d+)\.", r"encoder.blocks.{A\1}.attn_block."),
    (r"^norm_f\.", "encoder.norm."),
    (r"^decoder_embed\.", "decoder.embed."),
    (r"^mask_token$", "decoder.mask_token"),
    (r"^decoder_pos_embed_learned$", "decoder.pos_embed"),
    (r"^decoder_blocks\.(\d+)\.attn2\.", r"decoder.blocks.\1.attn."),
    (r"^decoder_blocks\.(\d+)\.norm2_1\.", r"decoder.blocks.\1.norm_q."),
    (r"^decoder_blocks\.(\d+)\.norm2_2\.", r"decoder.blocks.\1.norm_kv."),
    (r"^decoder_blocks\.(\d+)\.", r"decoder.blocks.\1."),
    (r"^decoder_norm\.", "decoder.norm."),
    (r"^ar_pred\.", "decoder.pred."),
    (r"^pos_embed_cls$", "cls_pos"),
]


def map2d_to_pointmap(state: State, layout: Optional[str] = None) -> State:
    """MAP 2D release / Mamba-Reg names → pointmap's (pretrainer / register classifier level). ``layout``: the
    target encoder's (``"M"`` a Mamba layer, ``"A"`` one followed by an attention block; default the file's
    own: an attention block after every third layer when it has any); the file's k-th attention block goes to
    the k-th ``A``. Registers (``cls_token``, ``pos_embed_cls`` → ``cls_pos``), ``neck``, ``norm_neck`` and
    ``head`` keep their names."""
    if layout is None:
        n = 1 + max([int(m.group(1)) for k in state for m in [re.match(r"layers\.(\d+)\.", k)] if m] or [0])
        vit = any(re.match(r"blocks\.\d+\.", k) for k in state)
        layout = "".join("A" if vit and (i + 1) % 3 == 0 else "M" for i in range(n))
    where = [i for i, c in enumerate(layout) if c == "A"]

    def place(m: re.Match) -> str:
        k = int(m.group(1))
        return str(where[k]) if k < len(where) else f"<A{k}: beyond layout {layout}>"

    return {re.sub(r"\{A(\d+)\}", place, _rename(k, _MAP2D)): v for k, v in state.items()}


CONVERTERS: Dict[str, Callable[[State, Optional[str]], State]] = {
    "point_mae": point_mae_to_pointmap,
    "pointmamba": pointmamba_to_pointmap,
    "map3d": map3d_to_pointmap,
    "map2d": map2d_to_pointmap,
}

# Key signatures, checked in this order (the peers share Point-MAE's names for the tokenizer and head).
_SIGNATURES = [
    ("pointmamba", re.compile(r"(^|\.)OrderScale_(gamma|beta)_\d+$|(^|\.)blocks\.layers\.\d+\.")),
    ("map3d", re.compile(r"(^|\.)blocks\.blocks\.\d+\.lfa\.|(^|\.)blocks\.blocks_vit\.\d+\.")),
    ("point_mae", re.compile(r"^(MAE_encoder\.)?blocks\.blocks\.\d+\.attn\.")),
    ("map2d", re.compile(r"^layers\.\d+\.mixer\.|^norm_f\.weight$|^decoder_blocks\.\d+\.attn2\.")),
    ("pointmap", re.compile(r"^(encoder\.)?(tokenizer|patch_embed)\.|^(encoder\.)?blocks\.\d+\.")),
]
FORMATS = ("pointmap",) + tuple(CONVERTERS)


def detect_format(state: State) -> Optional[str]:
    """The format whose key signature ``state`` carries (None when none does)."""
    for name, sig in _SIGNATURES:
        if any(sig.search(k) for k in state):
            return name
    return None
