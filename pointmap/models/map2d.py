"""MAP as its authors released it in 2D (yunzeliu/MAP ``models_mamba.py``): the ``map_*_patch16_224`` encoder,
built from pointmap's ``Block`` and ``MambaMixer``.

The release's Mamba layers are mamba_ssm's "add → norm → mixer" form (the mixer output h and the running sum r
passed on, r kept in float32); pointmap's pre-norm :class:`~pointmap.layers.Block` computes the same stream,
``x + DropPath(mixer(RMSNorm(x)))``, with x = r. What the release adds around it, each a named option of
:class:`MAP2DEncoder` (the presets reproduce the release; pointmap's own recipe turns them off):

- ``double_identity``: an attention block after every third Mamba layer acts on the mixer output h, not on
  the stream, and its input is added once more: h ← Block(h) + h (the block carries its own residuals).
  False: h ← Block(h).
- ``reinit_mixers``: the release's MAE-style pass re-initializes every Linear, the mixers' too, so Mamba's
  Δ initialisation and out_proj rescale are lost (every dt bias starts at 0). False keeps mamba's.
- ``release_weight_decay``: the release decays A_log / A_b_log (and, in the pretrainer, the mask token and the
  decoder's positional table); False keeps them out of weight decay, as mamba_ssm intends.

The bidirectional mixer is Vim's, with the release's own parameters for the reversed scan (``conv1d_b``,
``x_proj_b``, ``dt_proj_b``, ``A_b_log``, ``D_b``) and the two gated outputs averaged (``merge="mean"``).
"""
import logging
import math
from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F
from timm.layers import PatchEmbed, lecun_normal_, trunc_normal_
from torch import nn

from pointmap.layers import Block, MambaMixer, linear_rates, transformer_block

from ..errors import UserError
from .hybrid_encoder import EncoderOutput

_logger = logging.getLogger(__name__)


class MambaLayer(Block):
    """One release Mamba layer: ``x + DropPath(post(mixer(RMSNorm(x))))``, where ``post`` is the attention
    block on the mixer output when the layer has one (h ← Block(h) + h with ``double_identity``, else
    h ← Block(h)) and the identity otherwise."""

    def __init__(self, dim: int, mixer: nn.Module, norm_layer, drop_path: float = 0.0,
                 attn_block: Optional[nn.Module] = None, double_identity: bool = True):
        super().__init__(dim, mixer, None, norm_layer=norm_layer, drop_path=drop_path)
        self.attn_block = attn_block
        self.double_identity = double_identity

    def forward(self, x: torch.Tensor, ctx=None) -> torch.Tensor:
        """x: (B, L, C) the running sum → (B, L, C)."""
        h = self.mixer(self.norm1(x), ctx)
        if self.attn_block is not None:
            a = self.attn_block(h, ctx)
            h = a + h if self.double_identity else a
        return x + self.drop_path1(h)


def _rmsnorm(eps: float):
    return lambda dim: nn.RMSNorm(dim, eps=eps)


class MAP2DEncoder(nn.Module):
    """Images → 16×16 patch tokens in raster order + a learned positional table → Mamba layers (an attention
    block after every ``attn_every``-th) → final RMSNorm.

    Args:
        img_size, patch_size, in_chans: the patch grid (224 / 16: 14×14 = 196 tokens).
        embed_dim: channels C; depth: Mamba layers.
        num_heads, attn_mlp_ratio: the attention blocks (timm ViT blocks with qkv bias, LayerNorm eps 1e-5;
            the release passes mlp_ratio / 2 = 2).
        attn_every: an attention block after Mamba layers attn_every−1, 2·attn_every−1, …; 0: none
            (Mamba-Reg's classifier).
        drop_path_rate: the j-th layer's branch (after its attention block) dropped with linspace(0, r)[j].
        norm_eps: the RMSNorms' epsilon.
        residual_in_fp32: a half-precision stream (autocast) is kept in float32.
        double_identity, reinit_mixers, release_weight_decay: the release's quirks (module docstring).
        d_state, d_conv, expand: the mixers'.
    """

    modality = "image"
    token_encoder = True  # checkpoint loading: the model is an encoder (its keys have no ``encoder.``)

    def __init__(self, img_size: int = 224, patch_size: int = 16, in_chans: int = 3, embed_dim: int = 192,
                 depth: int = 24, num_heads: int = 12, attn_mlp_ratio: float = 2.0, attn_every: int = 3,
                 drop_path_rate: float = 0.1, norm_eps: float = 1e-5, residual_in_fp32: bool = True,
                 double_identity: bool = True, reinit_mixers: bool = True, release_weight_decay: bool = True,
                 d_state: int = 16, d_conv: int = 4, expand: int = 2):
        super().__init__()
        if attn_every < 0:
            raise UserError(f"attn_every must be >= 0 (0: no attention blocks); got {attn_every}")
        self.embed_dim = embed_dim
        self.patch_size = patch_size
        self.in_chans = in_chans
        self.residual_in_fp32 = residual_in_fp32
        self.release_weight_decay = release_weight_decay
        self.reinit_mixers = reinit_mixers
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        n = self.patch_embed.num_patches
        self.pos_embed = nn.Parameter(torch.zeros(1, n, embed_dim))
        norm = _rmsnorm(norm_eps)
        self.layout = "".join("A" if attn_every and (i + 1) % attn_every == 0 else "M" for i in range(depth))
        self.blocks = nn.ModuleList()
        for letter, dp in zip(self.layout, linear_rates(drop_path_rate, depth)):
            mixer = MambaMixer(embed_dim, d_state=d_state, d_conv=d_conv, expand=expand, bidirectional="sequence",
                               merge="mean")
            attn = transformer_block(embed_dim, num_heads=num_heads, mlp_ratio=attn_mlp_ratio, qkv_bias=True,
                                     norm_layer=nn.LayerNorm) if letter == "A" else None
            self.blocks.append(MambaLayer(embed_dim, mixer, norm, float(dp), attn, double_identity))
        self.norm = norm(embed_dim)
        gh, gw = self.patch_embed.grid_size
        rows, cols = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
        coords = torch.stack([(rows + 0.5) / gh, (cols + 0.5) / gw], dim=-1).reshape(-1, 2) - 0.5
        self.register_buffer("grid_coords", coords, persistent=False)
        release_init(self, reinit_mixers)
        if release_weight_decay:
            for m in self.modules():
                if isinstance(m, MambaMixer):
                    for name in ("A_log", "A_b_log"):
                        if hasattr(m, name):
                            getattr(m, name)._no_weight_decay = False

    @property
    def num_tokens(self) -> int:
        return self.patch_embed.num_patches

    @property
    def grid_size(self):
        return self.patch_embed.grid_size

    @property
    def target_dim(self) -> int:
        return self.patch_size ** 2 * self.in_chans

    def no_weight_decay(self) -> set:
        """The positional table (the release's ``pos_embed``, in its no-decay list)."""
        return {"pos_embed"}

    def fit_state(self, state: dict, prefix: str = "") -> dict:
        """A checkpoint's positional table made to fit this grid (the loader calls it): a square table of another
        size resampled bicubically (align_corners False), as Mamba-Reg's and DeiT's ``--finetune`` do (e.g. a
        128 px stage-1 file, 8×8, into a 224 px model, 14×14). The same grid is left as it is."""
        key = prefix + "pos_embed"
        table = state.get(key)
        gh, gw = self.grid_size
        if table is None or table.dim() != 3 or table.shape[1] == gh * gw:
            return state
        side = math.isqrt(table.shape[1])
        if side * side != table.shape[1]:
            return state  # not a square grid: the loader's shape check names it
        grid = table.reshape(table.shape[0], side, side, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid.float(), size=(gh, gw), mode="bicubic", align_corners=False).to(table.dtype)
        _logger.info("%s: resampled from a %d×%d grid to %d×%d", key, side, side, gh, gw)
        return {**state, key: grid.permute(0, 2, 3, 1).reshape(table.shape[0], gh * gw, -1)}

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """images: (B, C, H, W) → patch tokens + positional table (B, L, C), raster order."""
        return self.patch_embed(images) + self.pos_embed.to(images.dtype)

    def forward_tokens(self, x: torch.Tensor, return_layers: Optional[Sequence[int]] = None):
        """x: (B, S, C) embedded tokens → (final-normed (B, S, C), list of the running sums after the layers
        in ``return_layers``)."""
        if self.residual_in_fp32 and x.dtype in (torch.float16, torch.bfloat16):
            x = x.float()
        wanted = [i % len(self.blocks) for i in (return_layers or ())]
        kept = {}
        for i, blk in enumerate(self.blocks):
            x = blk(x)
            if i in wanted:
                kept[i] = x
        return self.norm(x), [kept[i] for i in wanted]

    def forward(self, images: torch.Tensor, return_layers: Optional[Sequence[int]] = None) -> EncoderOutput:
        """images: (B, C, H, W) → :class:`EncoderOutput` with tokens (B, L, C) in raster order."""
        x = self.embed(images)
        tokens, hidden = self.forward_tokens(x, return_layers)
        b = images.shape[0]
        order = torch.arange(x.shape[1], device=images.device).expand(b, -1)
        return EncoderOutput(tokens=tokens, centers=self.grid_coords.to(tokens.dtype).expand(b, -1, -1), order=order,
                             hidden=hidden if return_layers else None)


def xavier_pass(module: nn.Module, skip_mixers: bool = False) -> None:
    """The release's MAE-style pass (MM:458-477): every Linear Xavier-uniform with a zero bias, every LayerNorm
    1 / 0; ``skip_mixers`` leaves the Linear layers inside Mamba mixers as they are."""
    skip = set()
    if skip_mixers:
        for m in module.modules():
            if isinstance(m, MambaMixer):
                skip.update(id(s) for s in m.modules())
    for m in module.modules():
        if id(m) in skip:
            continue
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def release_init(encoder: MAP2DEncoder, reinit_mixers: bool = True) -> None:
    """The release's order of initialisation: patch embedding lecun-normal with zero bias, positional table
    truncated normal 0.02, mamba_ssm's GPT-2 rescale of each out_proj by 1/√depth, then the MAE-style pass
    (:func:`xavier_pass`), over the mixers too with ``reinit_mixers`` (which erases the rescale and Δ's init)."""
    lecun_normal_(encoder.patch_embed.proj.weight)
    nn.init.zeros_(encoder.patch_embed.proj.bias)
    trunc_normal_(encoder.pos_embed, std=0.02)
    depth = len(encoder.blocks)
    for m in encoder.modules():
        if isinstance(m, MambaMixer):
            nn.init.kaiming_uniform_(m.out_proj.weight, a=math.sqrt(5))
            with torch.no_grad():
                m.out_proj.weight /= math.sqrt(depth)
    xavier_pass(encoder, skip_mixers=not reinit_mixers)


def attention_positions(layout: str) -> List[int]:
    """Index of the layer that carries the k-th attention block."""
    return [i for i, c in enumerate(layout) if c == "A"]
