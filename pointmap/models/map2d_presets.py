"""The MAP 2D presets ``map_{tiny,small,base,large,huge}_patch16_224`` (the release's sizes) and Mamba-Reg's
``mambar_{tiny,small,base,large}_patch16_224``, and the pretrainer builder ``create_pretrainer`` calls for them.

``create_model(name)`` is the encoder (:class:`~pointmap.models.map2d.MAP2DEncoder`); ``num_classes=n`` the
register classifier (:class:`~pointmap.models.mambar.RegisterClassifier`): for ``map_*`` the hybrid that keeps the
attention blocks (``finetune="hybrid"``, pointmap's default) or Mamba-Reg's (``finetune="mambar"``: no attention
blocks, as the release's finetuning route); ``create_pretrainer(name)`` the release's objective
(:class:`~pointmap.models.map2d_decoder.MAP2DPretrainer`).
"""
import inspect
import logging
from typing import Optional, Union

from torch import nn

from ..errors import UserError
from ..objective import ObjectiveConfig, objective_settings
from .map2d import MAP2DEncoder
from .map2d_decoder import MAP2DPretrainer
from .mambar import RegisterClassifier
from .registry import create_model, register_model

_logger = logging.getLogger(__name__)

# size → (embed_dim, depth, attention heads, registers, neck reduction); the release gives every size 12
# heads, which 1024 channels do not divide (it cannot run map_large): pointmap's map_large uses 16
SIZES = {"tiny": (192, 24, 12, 12, 1), "small": (384, 24, 12, 12, 2), "base": (768, 24, 12, 12, 4),
         "large": (1024, 48, 16, 16, 8), "huge": (1536, 36, 12, 16, 8)}
FINETUNE_FORMS = ("hybrid", "mambar")
PRETRAINER_ARGS = tuple(p for p in inspect.signature(MAP2DPretrainer).parameters if p != "encoder")
# the release's finetuning parts, built but never used in pretraining (set aside when a file loads into it)
UNUSED_IN_PRETRAINING = ("cls_token", "cls_pos", "neck.weight", "norm_neck.weight", "head.weight", "head.bias")


def build_map2d(size: str, num_classes: Optional[int] = None, *, finetune: str = "hybrid",
                num_registers: Optional[int] = None, reduce: Optional[int] = None, **encoder_kwargs) -> nn.Module:
    """The encoder of ``size`` (``num_classes=None``) or its register classifier; ``finetune="mambar"``: without
    attention blocks and with mamba's own mixer init (Mamba-Reg's classifier)."""
    if size not in SIZES:
        raise UserError(f"unknown MAP 2D size {size!r}; sizes: {', '.join(SIZES)}")
    if finetune not in FINETUNE_FORMS:
        raise UserError(f"finetune must be one of {list(FINETUNE_FORMS)}; got {finetune!r}")
    for key in encoder_kwargs:
        if key in PRETRAINER_ARGS:
            raise UserError(f"{key} is an argument of the pretrainer: create_pretrainer(..., {key}=...)")
    dim, depth, heads, regs, red = SIZES[size]
    cfg = dict(img_size=224, patch_size=16, embed_dim=dim, depth=depth, num_heads=heads, drop_path_rate=0.1)
    if finetune == "mambar":
        cfg.update(attn_every=0, reinit_mixers=False)
    encoder = MAP2DEncoder(**{**cfg, **encoder_kwargs})
    if num_classes is None:
        return encoder
    return RegisterClassifier(encoder, num_classes, regs if num_registers is None else num_registers,
                              red if reduce is None else reduce)


# what a preset's **kwargs may hold: the classifier's, the encoder's and (through create_pretrainer) the objective's
PRESET_ARGS = frozenset({"finetune", "num_registers", "reduce", *PRETRAINER_ARGS,
                         *inspect.signature(MAP2DEncoder).parameters})


def _preset(size: str, mambar: bool = False):
    name = f"{'mambar' if mambar else 'map'}_{size}_patch16_224"
    dim, depth, heads, regs, red = SIZES[size]

    def fn(num_classes: Optional[int] = None, **kwargs) -> nn.Module:
        if mambar:
            kwargs = {"finetune": "mambar", **kwargs}
        return build_map2d(size, num_classes, **kwargs)

    fn.__name__ = fn.__qualname__ = name
    if mambar:
        fn.__doc__ = (f"Mamba-Reg's classifier, {size}: C={dim}, {depth} bidirectional Mamba layers, no attention "
                      f"blocks, {regs} registers, neck reduction {red}; its published weights load whole.")
    else:
        fn.__doc__ = (f"MAP 2D {size} as released: C={dim}, {depth} Mamba layers (RMSNorm, averaged bidirectional "
                      f"scan), an attention block ({heads} heads) after every third, learned positional table; "
                      f"num_classes: the hybrid register classifier ({regs} registers, reduction {red}); "
                      f"create_pretrainer: the release's objective.")
    fn.pretrainer = map2d_pretrainer
    return register_model(fn, forwards=(PRESET_ARGS,))


def map2d_pretrainer(name: str, objective: Union[str, ObjectiveConfig] = "map", pretrained=None,
                     **kwargs) -> MAP2DPretrainer:
    """``create_pretrainer`` for the MAP 2D presets: the release's objective, whose settings are
    :class:`MAP2DPretrainer`'s arguments (``decoder_embed_dim``, ``mask_rate_min``, ...); pointmap's objective
    settings (``mask_ratio``, ``row_size``, ...) do not apply and must stay at their defaults. ``pretrained``:
    a file in the release's layout (or an entry) loaded whole into encoder and decoder; the release's finetuning
    parts it also holds (registers, neck, head) are set aside and named."""
    default = ObjectiveConfig()
    obj = objective if isinstance(objective, ObjectiveConfig) else ObjectiveConfig(name=objective)
    settings = {k: kwargs.pop(k) for k in list(kwargs) if k in objective_settings()}
    changed = [k for k in objective_settings() if settings.get(k, getattr(obj, k)) != getattr(default, k)]
    if obj.name != "map" or changed:
        what = f"objective {obj.name!r}" if obj.name != "map" else f"objective setting(s) {', '.join(changed)}"
        raise UserError(f"{name} pretrains with the MAP 2D release's objective: {what} do not apply; its settings "
                        f"are model.args {', '.join(PRETRAINER_ARGS)}")
    pre_args = {k: kwargs.pop(k) for k in list(kwargs) if k in PRETRAINER_ARGS}
    card = path = None
    if pretrained is not None and pretrained is not False:
        from .pretrained import resolve_pretrained

        card, path = resolve_pretrained(pretrained, preset=name)
        if card is not None:
            pre_args = {**(card.pretrainer or {}), **pre_args}
            kwargs = {**card.args, **kwargs}
    model = MAP2DPretrainer(create_model(name, **kwargs), **pre_args)
    if path is not None:
        from .checkpoint import load_checkpoint

        result = load_checkpoint(model, path, source=card.format if card else "auto", whole=True)
        unused = [k for k in result.ignored_keys if k in UNUSED_IN_PRETRAINING]
        if unused:
            _logger.info("%s: set aside the release's finetuning parts, unused in pretraining: %s", path,
                         ", ".join(unused))
    return model


for _size in SIZES:
    _preset(_size)
for _size in ("tiny", "small", "base", "large"):
    _preset(_size, mambar=True)
