"""The MAP objective (and its MAE / AR special cases) around any token encoder, points or images."""
import dataclasses
import math
from dataclasses import dataclass
from typing import Optional, Union

import torch
from torch import nn

from pointmap.layers import PosMLP
from pointmap.ops import chamfer, gather_points
from pointmap.ops._precision import upcast

from ..errors import UserError, check_kwargs
from ..objective import (DECODER_ORDERS, DECODER_ROW_ORDERS, LOSSES, MASK_STRATEGIES, OBJECTIVES, ORDER_DRAWS,
                         ObjectiveConfig, objective_settings)
from .decoders import MAPDecoder, init_decoder_side
from .registry import MODELS, create_model


@dataclass
class PretrainOutput:
    """What the pretrainer returns; all the tensors a visualization needs.

    Sequence order is the encoder's serialization order (images: raster order). M = int(mask_ratio·G).

    Attributes:
        loss: () the objective, averaged over masked patches.
        pred: reconstructed masked patches in sequence order: points (B, M, K, 3) in absolute
            coordinates; images (B, M, p·p·C) normalized pixels.
        target: the ground truth of the same patches, same shape as ``pred``.
        mask: (B, G) bool, True = masked, in sequence order; ``pred[b]`` are the positions
            ``mask[b].nonzero()`` in ascending order.
        centers: (B, G, 3) patch centers in sequence order (images: (B, G, 2) grid coordinates).
        patches: all ground-truth patches in sequence order: points (B, G, K, 3) absolute; images
            (B, G, p·p·C). The visible ones are ``patches[~mask]``.
        order: (B, G) long, the grouped (FPS) index of each sequence position.
    """

    loss: torch.Tensor
    pred: torch.Tensor
    target: torch.Tensor
    mask: torch.Tensor
    centers: torch.Tensor
    patches: torch.Tensor
    order: torch.Tensor


def random_mask(batch: int, num_tokens: int, ratio: float, generator: Optional[torch.Generator] = None,
                device=None) -> torch.Tensor:
    """(B, G) bool with exactly int(ratio·G) True (masked) per row, uniformly at random, on ``device``."""
    return make_mask("random", batch, num_tokens, ratio, num_tokens, generator, device)


def make_mask(strategy: str, batch: int, num_tokens: int, ratio: float, row_size: int,
              generator: Optional[torch.Generator] = None, device=None) -> torch.Tensor:
    """(B, G) bool with exactly M = int(ratio·G) True (masked) per row, in sequence order (points: the
    scan order; images: raster order), drawn per sample from ``generator`` on ``device``.

    The sequence is read as a grid of G / row_size rows of ``row_size`` tokens: token i is at row
    r = i // row_size, column c = i % row_size (images: image rows and columns; points: MAP's rows of
    consecutive tokens along the curve).

    - ``random``: M tokens uniformly at random (MAE's masking).
    - ``sequential``: M consecutive tokens, starting at a random token and wrapping around the end of
      the sequence: one contiguous run along the scan (image: whole rows, then part of the next).
    - ``diagonal``: the tokens ordered by their diagonal d = (c − r + s) mod row_size (s a random shift),
      ties by row, and the first M of that order masked: whole diagonal stripes of the grid (when
      ratio·row_size is a whole number, exactly ratio·row_size diagonals), so every row and every column
      loses the same number of tokens, up to one.
    """
    if strategy not in MASK_STRATEGIES:
        raise UserError(f"mask_strategy must be one of {list(MASK_STRATEGIES)}; got {strategy!r}")
    m = int(ratio * num_tokens)
    i = torch.arange(num_tokens, device=device)
    if strategy == "random":
        key = torch.rand(batch, num_tokens, generator=generator, device=device)
    elif strategy == "sequential":
        start = torch.randint(num_tokens, (batch, 1), generator=generator, device=device)
        key = (i - start) % num_tokens
    else:
        r, c = i // row_size, i % row_size
        shift = torch.randint(row_size, (batch, 1), generator=generator, device=device)
        key = ((c - r + shift) % row_size) * num_tokens + r
    idx = key.argsort(dim=1)[:, :m]
    return torch.zeros(batch, num_tokens, dtype=torch.bool, device=device).scatter_(1, idx, True)


def row_attention_mask(length: int, row_size: int, device=None, local: bool = False) -> Optional[torch.Tensor]:
    """(L, L) bool: token i may attend to j iff row(j) ≤ row(i) (``local``: iff row(j) = row(i)), rows of
    ``row_size`` consecutive tokens. None when one row holds the whole sequence (full attention)."""
    if row_size >= length:
        return None
    row = torch.arange(length, device=device) // row_size
    if local:
        return row.unsqueeze(0) == row.unsqueeze(1)
    return row.unsqueeze(0) <= row.unsqueeze(1)


def resolve_row_size(objective: str, row_size: Optional[int], num_tokens: int, natural: Optional[int],
                     decoder_order: str) -> int:
    """The row length: ``mae`` → G, ``ar`` → 1, ``map`` and ``local_mae`` → ``row_size`` or the modality's
    own row length (image rows) or √G (points; ``concat``: √ of the decoder length, which is G as well)."""
    g = num_tokens
    if objective == "mae":
        row_size = g
    elif objective == "ar":
        row_size = 1
    elif objective not in OBJECTIVES:
        raise UserError(f"objective must be one of {list(OBJECTIVES)}; got {objective!r}")
    elif row_size is None:
        if natural is not None and decoder_order == "inplace":
            row_size = natural
        else:
            root = math.isqrt(g)
            if root * root != g:
                what = ("decoder_order='concat' cuts the decoder sequence" if decoder_order == "concat"
                        else "objective='map' without row_size cuts the sequence")
                raise UserError(f"{what} of length {g} into rows of √{g} tokens, but {g} is not a perfect "
                                 f"square (√{g} ≈ {math.sqrt(g):.2f}); pass row_size or use G = {root * root} "
                                 f"or {(root + 1) ** 2}")
            row_size = root
    if row_size < 1 or g % row_size:
        raise UserError(f"the number of tokens G={g} is not divisible by row_size={row_size}")
    return row_size


def objective_config(objective: Union[str, ObjectiveConfig] = "map", **settings) -> ObjectiveConfig:
    """``objective`` (a name or an :class:`~pointmap.config.ObjectiveConfig`) with ``settings`` (its other
    fields, by keyword) over it; an unknown setting is a ConfigError naming the nearest one."""
    check_kwargs("objective", "the pretrainer", settings, objective_settings(), fixed={"name": "objective="})
    if isinstance(objective, ObjectiveConfig):
        return dataclasses.replace(objective, **settings)
    return ObjectiveConfig(name=objective, **settings)


class MAPPretrainer(nn.Module):
    """Masked autoregressive pretraining around ``encoder`` (a HybridEncoder or ImageEncoder).

    Masks int(mask_ratio·G) patches per sample, encodes the visible tokens in sequence order, and
    decodes the full sequence with a Transformer whose attention is bidirectional inside a row of
    ``row_size`` tokens and causal across rows; masked outputs → Linear(C, T) → reconstruction.
    ``objective="mae"`` is Point-MAE's pretraining; with the ``pointmamba`` encoder, ``decoder_type="mamba"``
    and ``order_draw="random"`` it is PointMamba's (``decoder_init="xavier"``: both peers' decoder init).

    Args:
        encoder: the token encoder to pretrain.
        objective: an :class:`~pointmap.config.ObjectiveConfig`, or the objective's name with the settings
            below as keywords (their defaults: the ObjectiveConfig's). ``map`` (rows of ``row_size``, default
            √G / image rows), ``mae`` (one row of G), ``ar`` (rows of 1), ``local_mae`` (the paper's local-MAE
            baseline: the decoder attends only inside a row, for visible and mask tokens alike: bidirectional
            in a row, nothing across rows).

    Settings:
        mask_ratio: fraction of patches masked.
        row_size: the row length for ``map`` and ``local_mae``.
        mask_strategy: ``random`` (default), ``sequential`` or ``diagonal``; see :func:`make_mask`.
        decoder_order: ``inplace`` keeps every token at its sequence position; ``concat`` reproduces
            the released code's [visible; masked] decoder sequence.
        decoder_row_order: ``aligned`` (default) cuts the decoder sequence into rows in the encoder's scan
            order; ``shuffled`` (an ablation) feeds the decoder its sequence in a random permutation per
            sample, so rows no longer follow the scan; outputs are put back in sequence order.
        loss: ``cdl2`` / ``cdl1`` (Chamfer L2 / L1, points) or ``mse`` (images); None picks by modality.
        decoder_depth, decoder_heads, decoder_mlp_ratio, decoder_drop_path_rate: decoder settings.
        decoder_type: ``transformer`` (default) or ``mamba``: a one-way Mamba stack with the positions added
            once, causal token by token (PointMamba's decoder; objectives ``mae`` and ``ar`` only, as it
            cannot see a whole row); see :class:`~pointmap.models.decoders.MAPDecoder`.
        order_draw: with an encoder of several token orders (``pointmamba``: hilbert, hilbert-trans),
            ``first`` (default) always tokenizes in the first; ``random`` draws one order per batch, the
            same for every cloud of it, and applies that order's scale and shift (PointMamba's pretraining).
        decoder_init: ``trunc_normal`` (default, pointmap's) or ``xavier`` (Point-MAE's and PointMamba's);
            see :func:`~pointmap.models.decoders.init_decoder_side`.
    """

    def __init__(self, encoder: nn.Module, objective: Union[str, ObjectiveConfig] = "map", **settings):
        super().__init__()
        o = objective_config(objective, **settings)
        if o.mask_strategy not in MASK_STRATEGIES:
            raise UserError(f"mask_strategy must be one of {list(MASK_STRATEGIES)}; got {o.mask_strategy!r}")
        if not hasattr(encoder, "tokenize"):
            raise TypeError(f"create_pretrainer needs an encoder (create_model(name) with num_classes=None), "
                            f"got {type(encoder).__name__}")
        if o.decoder_order not in DECODER_ORDERS:
            raise UserError(f"decoder_order must be 'inplace' or 'concat'; got {o.decoder_order!r}")
        if o.decoder_row_order not in DECODER_ROW_ORDERS:
            raise UserError(f"decoder_row_order must be 'aligned' or 'shuffled'; got {o.decoder_row_order!r}")
        if not 0.0 < o.mask_ratio < 1.0:
            raise UserError(f"mask_ratio must be in (0, 1); got {o.mask_ratio}")
        if o.order_draw not in ORDER_DRAWS:
            raise UserError(f"order_draw must be one of {list(ORDER_DRAWS)}; got {o.order_draw!r}")
        orders = tuple(getattr(encoder, "orders", ()))
        if o.order_draw == "random" and len(orders) < 2:
            raise UserError(f"order_draw='random' needs an encoder with several token orders "
                             f"(pointmamba's hilbert and hilbert-trans); this one has {orders or 'none'}")
        if o.decoder_type == "mamba" and o.name not in ("mae", "ar"):
            raise UserError(f"decoder_type='mamba' is causal token by token: it fits objective 'mae' "
                             f"(PointMamba's) or 'ar', not {o.name!r}")
        modality = encoder.modality
        loss = o.loss or ("mse" if modality == "image" else "cdl2")
        if loss not in LOSSES or (modality == "image") != (loss == "mse"):
            raise UserError(f"loss {loss!r} does not fit a {modality} encoder "
                             f"({'mse' if modality == 'image' else 'cdl2 or cdl1'})")
        dim, g = encoder.embed_dim, encoder.num_tokens
        self.encoder = encoder
        self.mask_ratio = o.mask_ratio
        self.objective = o.name
        self.decoder_order = o.decoder_order
        self.decoder_row_order = o.decoder_row_order
        self.mask_strategy = o.mask_strategy
        self.order_draw = o.order_draw
        self.loss_name = loss
        self.row_size = resolve_row_size(o.name, o.row_size, g, encoder.natural_row_size(), o.decoder_order)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.decoder_pos_embed = PosMLP(dim, encoder.pos_embed[0].in_features)
        self.decoder = MAPDecoder(dim, o.decoder_depth, o.decoder_heads, o.decoder_mlp_ratio, o.decoder_drop_path_rate,
                                  block_type=o.decoder_type)
        self.predictor = nn.Linear(dim, encoder.target_dim)
        init_decoder_side(o.decoder_init, self.decoder, (self.decoder_pos_embed, self.predictor))
        nn.init.trunc_normal_(self.mask_token, std=0.02)

    def draw_order(self, generator: Optional[torch.Generator] = None, device=None) -> int:
        """The index of the token order for one batch: 0 with ``order_draw="first"``; with ``"random"``, one
        of the encoder's orders uniformly, drawn from ``generator`` (None: the global RNG) on ``device``."""
        if self.order_draw == "first":
            return 0
        return int(torch.randint(len(self.encoder.orders), (), generator=generator, device=device))

    def decoder_mask(self, device=None) -> Optional[torch.Tensor]:
        """(G, G) bool attention mask of the decoder (None for ``mae``)."""
        return row_attention_mask(self.encoder.num_tokens, self.row_size, device, local=self.objective == "local_mae")

    def _decode(self, x: torch.Tensor, pos: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
        """The decoder over x, pos (B, L, C) -> (B, L, C); ``shuffled`` runs it on a random permutation of
        the sequence (one per sample) and returns the outputs in the original order."""
        attn_mask = self.decoder_mask(x.device)  # the decoder sequence has G tokens in either order
        if self.decoder_row_order == "aligned":
            return self.decoder(x, pos, attn_mask)
        perm = torch.rand(x.shape[:2], generator=generator, device=x.device).argsort(dim=1)
        idx = perm.unsqueeze(-1).expand_as(x)
        out = self.decoder(x.gather(1, idx), pos.gather(1, idx), attn_mask)
        return torch.empty_like(out).scatter_(1, idx, out)

    def _loss(self, pred: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        """pred, target: (B, M, T) → the objective over all masked patches, or per patch (B·M,) with
        ``reduction="none"``."""
        pred, target = upcast(pred), upcast(target)  # float32 at least: a float64 run's loss stays float64
        if self.loss_name == "mse":
            sq = (pred - target).pow(2)
            return sq.mean() if reduction == "mean" else sq.reshape(-1, sq.shape[-1]).mean(dim=1)
        return chamfer(pred.reshape(-1, pred.shape[-1] // 3, 3), target.reshape(-1, target.shape[-1] // 3, 3),
                       norm=2 if self.loss_name == "cdl2" else 1, reduction=reduction)

    def patch_losses(self, out: PretrainOutput) -> torch.Tensor:
        """(B, M): the objective of each masked patch of ``out`` (positions as in ``out.mask``); their mean
        is ``out.loss`` (every patch has as many points or pixels)."""
        b, m = out.mask.shape[0], out.pred.shape[1]
        return self._loss(out.pred.reshape(b, m, -1), out.target.reshape(b, m, -1), reduction="none").reshape(b, m)

    def no_weight_decay(self) -> set:
        return {"mask_token"}

    def forward(self, inputs: torch.Tensor, generator: Optional[torch.Generator] = None) -> PretrainOutput:
        """inputs: points (B, N, 3) or images (B, C, H, W) → :class:`PretrainOutput`.

        generator: draws the token order (``order_draw="random"``), then the mask (and the ``shuffled``
            permutation) on the inputs' device; None uses the global RNG.
        """
        enc = self.encoder
        if self.order_draw == "random":
            pt = enc.tokenize(inputs, order_index=self.draw_order(generator, inputs.device))
        else:
            pt = enc.tokenize(inputs)
        b, g, c = pt.tokens.shape
        mask = make_mask(self.mask_strategy, b, g, self.mask_ratio, self.row_size, generator, inputs.device)
        m = int(self.mask_ratio * g)
        v = g - m
        # positions of the visible / masked tokens, ascending: gathers of a fixed size instead of boolean
        # indexing, whose data-dependent shape breaks torch.compile's graph
        by_mask = mask.to(torch.uint8).argsort(dim=1, stable=True)
        vis, msk = by_mask[:, :v], by_mask[:, v:]
        vis_coords = gather_points(pt.coords, vis)
        feats = enc.encode(gather_points(pt.tokens, vis), vis_coords, pt.order.gather(1, vis)).tokens
        dec_pos = self.decoder_pos_embed(pt.coords)                        # (B, G, C)
        if self.decoder_order == "inplace":
            x = self.mask_token.to(feats.dtype).expand(b, g, c).scatter(1, vis.unsqueeze(-1).expand(-1, -1, c), feats)
            out = gather_points(self._decode(x, dec_pos, generator), msk)
        else:
            x = torch.cat([feats, self.mask_token.to(feats.dtype).expand(b, m, c)], dim=1)
            pos = torch.cat([gather_points(dec_pos, vis), gather_points(dec_pos, msk)], dim=1)
            out = self._decode(x, pos, generator)[:, v:]
        pred = self.predictor(out)                                          # (B, M, T)
        target = gather_points(pt.target, msk)
        loss = self._loss(pred, target)
        patches = pt.target
        if enc.modality == "points":
            k = pt.target.shape[-1] // 3
            masked_centers = gather_points(pt.coords, msk).reshape(b, m, 1, 3)
            pred = pred.reshape(b, m, k, 3) + masked_centers
            target = target.reshape(b, m, k, 3) + masked_centers
            patches = pt.target.reshape(b, g, k, 3) + pt.coords.unsqueeze(2)
        return PretrainOutput(loss=loss, pred=pred, target=target, mask=mask, centers=pt.coords,
                              patches=patches, order=pt.order)


def create_pretrainer(encoder: Union[str, nn.Module] = "hybridnet_s", objective: Union[str, ObjectiveConfig] = "map",
                      **kwargs) -> MAPPretrainer:
    """Builds a :class:`MAPPretrainer`: ``objective`` a name or an :class:`~pointmap.config.ObjectiveConfig`;
    keywords named like an ObjectiveConfig field set the objective (``mask_ratio=0.6``, ``decoder_type="mamba"``),
    the others override the encoder preset ``encoder`` (a name; or an encoder module, without overrides).
    A preset with an objective of its own (the MAP 2D release's ``map_*_patch16_224``) builds that instead."""
    if isinstance(encoder, str) and getattr(MODELS.get(encoder), "pretrainer", None) is not None:
        return MODELS.get(encoder).pretrainer(encoder, objective, **kwargs)
    names = set(objective_settings())
    settings = {k: v for k, v in kwargs.items() if k in names}
    overrides = {k: v for k, v in kwargs.items() if k not in names}
    if isinstance(encoder, str):
        encoder = create_model(encoder, **overrides)
    elif overrides:
        raise TypeError(f"encoder overrides {sorted(overrides)} need a preset name, not a module")
    return MAPPretrainer(encoder, objective, **settings)
