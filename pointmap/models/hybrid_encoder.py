"""HybridEncoder: point patches → tokens in serialization order → a layout of Mamba/Transformer blocks."""
from dataclasses import dataclass
from functools import partial
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from timm.layers import trunc_normal_
from torch import nn

from pointmap.layers import MambaMixer, linear_rates, MiniPointNet, PosMLP, TokenContext, mamba_block, transformer_block
from pointmap.ops import gather_points, group, serialize

from ..errors import UserError


@dataclass
class EncoderOutput:
    """What an encoder returns.

    Attributes:
        tokens: (B, S, C) final features of the patch tokens, in sequence order (S = G per token order).
        centers: (B, S, d) coordinates of each token (patch centers; image: patch grid coordinates).
        order: (B, S) long, index of each token's patch among the G patches as grouped (FPS order).
        prefix: (B, P, C) final features of the prefix (cls) tokens, or None.
        hidden: features of the patch tokens after the blocks asked for in ``return_layers``
            (each (B, S, C), before the final norm), or None.
    """

    tokens: torch.Tensor
    centers: torch.Tensor
    order: torch.Tensor
    prefix: Optional[torch.Tensor] = None
    hidden: Optional[List[torch.Tensor]] = None


@dataclass
class PatchTokens:
    """Embedded patches in sequence order, the input of the encoder blocks and of the pretrainer.

    Attributes:
        tokens: (B, G, C) patch embeddings.
        coords: (B, G, d) positions (patch centers, d = 3; image patch grid coordinates, d = 2).
        target: (B, G, T) reconstruction target per patch (points: the K neighbours relative to the
            center, flattened, T = 3K; images: per-patch normalized pixels).
        order: (B, G) long, index of each token among the patches as grouped.
    """

    tokens: torch.Tensor
    coords: torch.Tensor
    target: torch.Tensor
    order: torch.Tensor


def resolve_norm(norm_layer: Union[str, Callable, None]) -> Callable[[int], nn.Module]:
    """``"layernorm"`` (default), ``"rmsnorm"`` or a callable ``norm_layer(dim)``."""
    if norm_layer is None or norm_layer == "layernorm":
        return nn.LayerNorm
    if norm_layer == "rmsnorm":
        return nn.RMSNorm
    if callable(norm_layer):
        return norm_layer
    raise UserError(f"norm_layer must be 'layernorm', 'rmsnorm' or a callable, got {norm_layer!r}")


def init_weights(module: nn.Module, mixers: bool = False) -> None:
    """Point-MAE's init (truncated normal 0.02, zero bias) for linear and conv layers outside Mamba mixers,
    whose own initialisation (mamba's Δ and A) is kept; ``mixers``: theirs too (PointMamba's pretraining
    encoder re-initialises them so, dt_proj's bias included; A_log and D keep mamba's)."""
    skip = set()
    for m in module.modules():
        if isinstance(m, MambaMixer) and not mixers:
            skip.update(id(s) for s in m.modules())
    for m in module.modules():
        if id(m) in skip:
            continue
        if isinstance(m, (nn.Linear, nn.Conv1d)):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def no_weight_decay(model: nn.Module) -> set:
    """Names of the parameters to keep out of weight decay: 1-D ones (norms, biases, D, LNP's affine), and
    what any submodule lists in its ``no_weight_decay()`` (timm's convention): Mamba's A_log / A_b_log,
    cls / mask tokens and their positions, PointMamba's per-order scale and shift."""
    names = {name for name, p in model.named_parameters() if p.ndim <= 1}
    for prefix, module in model.named_modules():
        fn = getattr(module, "no_weight_decay", None)
        if callable(fn):
            names.update(f"{prefix}.{n}" if prefix else n for n in fn())
    return names
POS_MODES = ("every_block", "once")


class TokenEncoder(nn.Module):
    """The modality-independent core: positional MLP, blocks from a layout string, final norm.

    Args:
        embed_dim: channels C.
        layout: one letter per block, each a key of ``block_fns`` (``M`` Mamba, ``T`` Transformer).
        num_heads, mlp_ratio, qkv_bias: Transformer block settings.
        mamba_mlp_ratio: an MLP after each Mamba mixer when > 0 (0: Mamba blocks are mixer only).
        bidirectional: the Mamba mixers' second scan (False, ``"sequence"``, ``"channel"``).
        drop_path_rate: stochastic depth, linearly from 0 to this over the blocks.
        drop_path_rates: explicit per-block rates (overrides ``drop_path_rate``).
        norm_layer: ``"layernorm"``, ``"rmsnorm"`` or a callable.
        block_fns: letter → ``fn(dim, drop_path) -> nn.Module``; replaces / extends the defaults.
        coord_dim: dimension of the positions fed to the positional MLP.
        pos_act_layer: activation of the positional MLP.
        pos_mode: where the positional embedding is added: ``"every_block"`` (at every block's input,
            Point-MAE's and the MAP release's habit) or ``"once"`` (to the input of the first block only,
            PointMamba's).
        block_dropout: dropout on every block's output (PointMamba's ``drop_out``, 0.1 in its OBJ-ONLY
            recipe); 0 adds no module.
    """

    modality = "tokens"

    def __init__(self, embed_dim: int = 384, layout: str = "MMMTMMMTMMMT", num_heads: int = 6,
                 mlp_ratio: float = 4.0, qkv_bias: bool = False, mamba_mlp_ratio: float = 0.0,
                 bidirectional: Union[bool, str] = False, drop_path_rate: float = 0.0,
                 drop_path_rates: Optional[Sequence[float]] = None, norm_layer=None,
                 block_fns: Optional[Dict[str, Callable]] = None, coord_dim: int = 3,
                 pos_act_layer=nn.GELU, pos_mode: str = "every_block", block_dropout: float = 0.0):
        super().__init__()
        if pos_mode not in POS_MODES:
            raise UserError(f"pos_mode must be one of {list(POS_MODES)}, got {pos_mode!r}")
        norm_layer = resolve_norm(norm_layer)
        self.pos_mode = pos_mode
        self.embed_dim = embed_dim
        self.layout = layout
        fns = {"M": partial(mamba_block, norm_layer=norm_layer, mlp_ratio=mamba_mlp_ratio,
                            bidirectional=bidirectional),
               "T": partial(transformer_block, num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                            norm_layer=norm_layer)}
        fns.update(block_fns or {})
        for i, letter in enumerate(layout):
            if letter not in fns:
                raise UserError(f"layout {layout!r}: unknown block letter {letter!r} at position {i}; "
                                 f"known letters: {', '.join(sorted(fns))}")
        if drop_path_rates is None:
            drop_path_rates = linear_rates(drop_path_rate, len(layout))
        elif len(drop_path_rates) != len(layout):
            raise UserError(f"{len(drop_path_rates)} drop_path_rates for a layout of {len(layout)} blocks")
        self.pos_embed = PosMLP(embed_dim, coord_dim, act_layer=pos_act_layer)
        self.blocks = nn.ModuleList(fns[letter](embed_dim, drop_path=float(dp))
                                    for letter, dp in zip(layout, drop_path_rates))
        self.norm = norm_layer(embed_dim)
        self.block_drop = nn.Dropout(block_dropout) if block_dropout > 0 else None

    def forward_tokens(self, x: torch.Tensor, pos: torch.Tensor, ctx: Optional[TokenContext] = None,
                       return_layers: Optional[Sequence[int]] = None):
        """Runs the blocks, adding ``pos`` at every block's input or once before the first (``pos_mode``),
        with ``block_dropout`` on each block's output.

        x, pos: (B, L, C) → (final-normed (B, L, C), list of (B, L, C) after the blocks in ``return_layers``,
        in that order; negative indices count from the end).
        """
        wanted = [i % len(self.blocks) for i in (return_layers or ())]
        kept = {}
        every = self.pos_mode == "every_block"
        for i, blk in enumerate(self.blocks):
            x = blk(x + pos if every or i == 0 else x, ctx)
            if self.block_drop is not None:
                x = self.block_drop(x)
            if i in wanted:
                kept[i] = x
        return self.norm(x), [kept[i] for i in wanted]

    def encode(self, x: torch.Tensor, coords: torch.Tensor, order: torch.Tensor,
               prefix: Optional[torch.Tensor] = None, prefix_pos: Optional[torch.Tensor] = None,
               return_layers: Optional[Sequence[int]] = None) -> EncoderOutput:
        """Embedded tokens → :class:`EncoderOutput`.

        x: (B, S, C) tokens, coords: (B, S, d) their positions, order: (B, S) long;
        prefix, prefix_pos: optional (B, P, C) tokens (a cls token) put before the others.
        """
        pos = self.pos_embed(coords)
        p = 0
        if prefix is not None:
            p = prefix.shape[1]
            x = torch.cat([prefix, x], dim=1)
            pos = torch.cat([prefix_pos if prefix_pos is not None else torch.zeros_like(prefix), pos], dim=1)
        x, hidden = self.forward_tokens(x, pos, TokenContext(centers=coords, num_prefix=p), return_layers)
        return EncoderOutput(tokens=x[:, p:], centers=coords, order=order, prefix=x[:, :p] if p else None,
                             hidden=[h[:, p:] for h in hidden] if return_layers else None)

    @property
    def num_tokens(self) -> int:
        raise NotImplementedError

    def natural_row_size(self) -> Optional[int]:
        """The modality's own row length for MAP (None: use √G)."""
        return None


class HybridEncoder(TokenEncoder):
    """Point-cloud encoder: group → mini-PointNet tokens → serialization order → blocks → norm.

    Args (besides :class:`TokenEncoder`'s):
        num_group: G patches (FPS centers).
        group_size: K points per patch.
        order: serialization of the tokens, one of ``pointmap.ops.serialize``'s orders, or a sequence
            of them: the token sequence is then the G tokens in each order, one after the other
            (PointMamba's hilbert + hilbert-trans). Pretraining tokenizes in one of them (the first, or one
            drawn per batch: the pretrainer's ``order_draw``).
        order_indicator: a learnable per-order scale and shift of the tokens (PointMamba).
        grid_size, grid_depth: quantization of the centers for the curve orders (``None``: a 2^10 grid
            over each cloud's bounding box; ``0.02, "batch"``: PointMamba's); see ``pointmap.ops.serialize``.
        skip_near_origin: FPS never picks a point with x²+y²+z² ≤ 1e-3 after the first, as pointnet2_ops
            does (the peers' FPS); see ``pointmap.ops.fps``.
        mixer_init: ``"mamba"`` keeps the Mamba mixers' own initialisation; ``"trunc_normal"`` gives their
            linear and conv layers the truncated normal of the rest (PointMamba's pretraining encoder).
    """

    modality = "points"
    MIXER_INITS = ("mamba", "trunc_normal")

    def __init__(self, embed_dim: int = 384, layout: str = "MMMTMMMTMMMT", num_group: int = 64,
                 group_size: int = 32, order: Union[str, Sequence[str]] = "hilbert",
                 order_indicator: bool = False, grid_size: Optional[float] = None, grid_depth: str = "cloud",
                 skip_near_origin: bool = False, mixer_init: str = "mamba", **kwargs):
        if mixer_init not in self.MIXER_INITS:
            raise UserError(f"mixer_init must be one of {list(self.MIXER_INITS)}, got {mixer_init!r}")
        super().__init__(embed_dim=embed_dim, layout=layout, coord_dim=3, **kwargs)
        self.num_group = num_group
        self.group_size = group_size
        self.grid_size = grid_size
        self.grid_depth = grid_depth
        self.skip_near_origin = skip_near_origin
        self.orders: Tuple[str, ...] = (order,) if isinstance(order, str) else tuple(order)
        self.tokenizer = MiniPointNet(embed_dim)
        if order_indicator:
            self.order_scale = nn.Parameter(torch.ones(len(self.orders), embed_dim))
            self.order_shift = nn.Parameter(torch.zeros(len(self.orders), embed_dim))
        else:
            self.order_scale = self.order_shift = None
        init_weights(self, mixers=mixer_init == "trunc_normal")

    @property
    def num_tokens(self) -> int:
        return self.num_group

    def no_weight_decay(self) -> set:
        return {"order_scale", "order_shift"} if self.order_scale is not None else set()

    def peer_param_ndim(self) -> dict:
        """PointMamba stores each order's scale and shift as its own 1-D vector (``OrderScale_gamma_i``)."""
        return {"order_scale": 1, "order_shift": 1} if self.order_scale is not None else {}

    @property
    def target_dim(self) -> int:
        return 3 * self.group_size

    def group(self, points: torch.Tensor):
        """points: (B, N, 3) → neighborhood (B, G, K, 3) relative to the centers, centers (B, G, 3)."""
        return group(points, self.num_group, self.group_size, skip_near_origin=self.skip_near_origin)

    def _ordered(self, tokens, centers, order: str, i: int):
        perm = serialize(centers, order, grid_size=self.grid_size, grid_depth=self.grid_depth)  # (B, G)
        x = gather_points(tokens, perm)
        if self.order_scale is not None:
            x = x * self.order_scale[i] + self.order_shift[i]
        return x, gather_points(centers, perm), perm

    def tokenize(self, points: torch.Tensor, order_index: int = 0) -> PatchTokens:
        """points: (B, N, 3) → :class:`PatchTokens` in serialization order ``orders[order_index]``, with that
        order's scale and shift (``order_indicator``)."""
        neighborhood, centers = self.group(points)
        tokens = self.tokenizer(neighborhood)
        x, c, perm = self._ordered(tokens, centers, self.orders[order_index], order_index)
        target = gather_points(neighborhood.flatten(2), perm)             # (B, G, 3K)
        return PatchTokens(x, c, target, perm)

    def forward(self, points: torch.Tensor, prefix: Optional[torch.Tensor] = None,
                prefix_pos: Optional[torch.Tensor] = None,
                return_layers: Optional[Sequence[int]] = None) -> EncoderOutput:
        """points: (B, N, 3) → :class:`EncoderOutput` with tokens (B, S, C), S = G · len(orders).

        prefix, prefix_pos: optional (B, P, C) tokens (a cls token) put before the patch tokens.
        """
        neighborhood, centers = self.group(points)
        tokens = self.tokenizer(neighborhood)
        parts = [self._ordered(tokens, centers, o, i) for i, o in enumerate(self.orders)]
        x = torch.cat([p[0] for p in parts], dim=1)
        c = torch.cat([p[1] for p in parts], dim=1)
        order = torch.cat([p[2] for p in parts], dim=1)
        return self.encode(x, c, order, prefix, prefix_pos, return_layers)
