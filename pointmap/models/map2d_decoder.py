"""The MAP 2D release's objective (yunzeliu/MAP ``models_mamba.py``): its decoder, its mask-rate draw, its
norm-pix target and loss, around a :class:`~pointmap.models.map2d.MAP2DEncoder`.

pointmap's own :class:`~pointmap.models.MAPPretrainer` is a different objective (a decoder as wide as the
encoder, a fixed mask ratio, positions from an MLP); ``create_pretrainer("map_*_patch16_224")`` builds this one.
Masks come from a ``torch.Generator`` (per rank: whoever seeds it), not numpy's global RNG.
"""
import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from timm.layers import Mlp
from torch import nn

from ..errors import UserError
from .image import patchify
from .map2d import MAP2DEncoder, xavier_pass
from .pretrainer import PretrainOutput, row_attention_mask


class KVAttention(nn.Module):
    """Attention with queries and keys/values from two inputs (the release's ``attn2``: ``q`` C → C and ``kv``
    C → 2C, both with bias, ``proj``); ``attn_mask`` (L, L) bool, True = may attend."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise UserError(f"decoder width {dim} is not divisible by decoder_num_heads {num_heads}")
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, xq: torch.Tensor, xkv: torch.Tensor, attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        b, n, c = xq.shape
        h = self.num_heads
        q = self.q(xq).reshape(b, n, h, c // h).transpose(1, 2)
        k, v = self.kv(xkv).reshape(b, xkv.shape[1], 2, h, c // h).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class DecoderBlock(nn.Module):
    """x ← x + attn(q = LN_q(x), kv = LN_kv(x)); x ← x + MLP(LN(x)) (the release's ``norm2_1``, ``norm2_2``,
    ``norm2``); no drop path."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.attn = KVAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU)

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = x + self.attn(self.norm_q(x), self.norm_kv(x), attn_mask)
        return x + self.mlp(self.norm2(x))


class MAP2DDecoder(nn.Module):
    """Encoder tokens of the visible patches → a prediction at every position (B, L, T).

    ``embed`` (C → D), the visible tokens back at their raster positions, ``mask_token`` at the others, the
    learned table ``pos_embed`` (1, L, D) added, ``depth`` blocks under the row-block-causal mask (rows of
    ``row_size`` tokens: position i attends to j iff row(j) ≤ row(i)), ``norm``, ``pred`` (D → T).
    """

    def __init__(self, enc_dim: int, num_tokens: int, row_size: int, target_dim: int = 768, dim: int = 192,
                 depth: int = 4, num_heads: int = 16, mlp_ratio: float = 4.0, release_weight_decay: bool = True):
        super().__init__()
        if num_tokens % row_size:
            raise UserError(f"{num_tokens} tokens do not cut into rows of {row_size}")
        self.row_size = row_size
        self.release_weight_decay = release_weight_decay
        self.embed = nn.Linear(enc_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_tokens, dim))
        self.blocks = nn.ModuleList(DecoderBlock(dim, num_heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.pred = nn.Linear(dim, target_dim)
        xavier_pass(self)
        nn.init.normal_(self.mask_token, std=0.02)
        nn.init.normal_(self.pos_embed, std=0.02)

    def no_weight_decay(self) -> set:
        """The mask token and the positional table, unless ``release_weight_decay`` (the release decays them)."""
        return set() if self.release_weight_decay else {"mask_token", "pos_embed"}

    def attn_mask(self, device=None) -> torch.Tensor:
        """(L, L) bool, True where position i may attend to j (row(j) ≤ row(i))."""
        mask = row_attention_mask(self.pos_embed.shape[1], self.row_size, device)
        return mask if mask is not None else torch.ones(self.pos_embed.shape[1], self.pos_embed.shape[1],
                                                        dtype=torch.bool, device=device)

    def assemble(self, feats: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        """feats (B, V, C) at positions ``visible`` (B, V) long → the decoder input (B, L, D)."""
        x = self.embed(feats)
        b, _, d = x.shape
        full = self.mask_token.to(x.dtype).expand(b, self.pos_embed.shape[1], d)
        full = full.scatter(1, visible.unsqueeze(-1).expand(-1, -1, d), x)
        return full + self.pos_embed.to(x.dtype)

    def forward(self, feats: torch.Tensor, visible: torch.Tensor, return_blocks: bool = False):
        """→ pred (B, L, T); with ``return_blocks`` also the list of each block's output."""
        x = self.assemble(feats, visible)
        mask = self.attn_mask(x.device)
        outs = []
        for blk in self.blocks:
            x = blk(x, mask)
            outs.append(x)
        pred = self.pred(self.norm(x))
        return (pred, outs) if return_blocks else pred


def truncated_normal_rate(mean: float, std: float, low: float, high: float,
                          generator: Optional[torch.Generator] = None, device=None) -> float:
    """One draw from normal(mean, std) truncated to [low, high] (scipy's truncnorm, by the inverse CDF), from
    ``generator``."""
    a, b = (torch.tensor([low, high], dtype=torch.float64) - mean) / std
    lo, hi = torch.special.ndtr(a), torch.special.ndtr(b)
    u = torch.rand((), generator=generator, device=device, dtype=torch.float64).cpu()
    return float(mean + std * torch.special.ndtri(lo + u * (hi - lo)))


def norm_pix_target(images: torch.Tensor, patch_size: int, eps: float = 1e-6) -> Tuple[torch.Tensor, torch.Tensor]:
    """(patches (B, L, p·p·C) in the release's order, each normalized by its mean and unbiased variance:
    (p − mean) / √(var + eps))."""
    patches = patchify(images, patch_size)
    mean, var = patches.mean(dim=-1, keepdim=True), patches.var(dim=-1, keepdim=True, unbiased=True)
    return patches, (patches - mean) / (var + eps).sqrt()


class MAP2DPretrainer(nn.Module):
    """The release's pretraining model: ``encoder`` on the visible patches, :class:`MAP2DDecoder`, norm-pix
    target, squared error averaged over each masked patch's values and then over the masked patches.

    Args:
        encoder: a :class:`~pointmap.models.map2d.MAP2DEncoder`.
        decoder_embed_dim, decoder_depth, decoder_num_heads, decoder_mlp_ratio: the decoder (192, 4, 16, 4).
        mask_rate_mean, mask_rate_std, mask_rate_min, mask_rate_max: one mask rate per forward from a normal
            truncated to [min, max]; every sample masks ⌈L·rate⌉ patches.
        norm_pix_eps: the epsilon inside the target's square root.
    """

    def __init__(self, encoder: MAP2DEncoder, decoder_embed_dim: int = 192, decoder_depth: int = 4,
                 decoder_num_heads: int = 16, decoder_mlp_ratio: float = 4.0, mask_rate_mean: float = 0.5,
                 mask_rate_std: float = 0.25, mask_rate_min: float = 0.3, mask_rate_max: float = 0.7,
                 norm_pix_eps: float = 1e-6):
        super().__init__()
        if not 0.0 < mask_rate_min <= mask_rate_max < 1.0:
            raise UserError(f"mask rates need 0 < mask_rate_min <= mask_rate_max < 1; got {mask_rate_min}, "
                            f"{mask_rate_max}")
        self.encoder = encoder
        self.mask_rate = (mask_rate_mean, mask_rate_std, mask_rate_min, mask_rate_max)
        self.norm_pix_eps = norm_pix_eps
        self.decoder = MAP2DDecoder(encoder.embed_dim, encoder.num_tokens, encoder.grid_size[1], encoder.target_dim,
                                    decoder_embed_dim, decoder_depth, decoder_num_heads, decoder_mlp_ratio,
                                    encoder.release_weight_decay)

    def draw_mask(self, batch: int, generator: Optional[torch.Generator] = None, device=None) -> torch.Tensor:
        """(B, L) bool, True = masked: one rate for the batch, ⌈L·rate⌉ patches per sample, the first of a
        random permutation of each sample's positions; all from ``generator`` (None: the global RNG)."""
        n = self.encoder.num_tokens
        rate = truncated_normal_rate(*self.mask_rate, generator=generator, device=device)
        m = min(n - 1, math.ceil(n * rate))
        order = torch.rand(batch, n, generator=generator, device=device).argsort(dim=1)
        return torch.zeros(batch, n, dtype=torch.bool, device=device).scatter_(1, order[:, :m], True)

    def forward(self, images: torch.Tensor, generator: Optional[torch.Generator] = None,
                mask: Optional[torch.Tensor] = None) -> PretrainOutput:
        """images: (B, C, H, W) → :class:`~pointmap.models.PretrainOutput` (pred, target: the masked patches,
        (B, M, p·p·C), positions ascending). ``mask`` (B, L) bool, the same count per sample: given instead of
        drawn."""
        b = images.shape[0]
        if mask is None:
            mask = self.draw_mask(b, generator, images.device)
        counts = mask.sum(dim=1)
        if not bool((counts == counts[0]).all()):
            raise UserError(f"every sample must mask as many patches; got {counts.tolist()}")
        m = int(counts[0])
        by_mask = mask.to(torch.uint8).argsort(dim=1, stable=True)
        visible, masked = by_mask[:, :mask.shape[1] - m], by_mask[:, mask.shape[1] - m:]
        x = self.encoder.embed(images)
        feats, _ = self.encoder.forward_tokens(x.gather(1, visible.unsqueeze(-1).expand(-1, -1, x.shape[-1])))
        pred = self.decoder(feats, visible)                                     # (B, L, T)
        _, target = norm_pix_target(images, self.encoder.patch_size, self.norm_pix_eps)
        dtype = torch.promote_types(pred.dtype, torch.float32)                 # float32 at least (autocast)
        per_patch = (pred.to(dtype) - target.to(dtype)).pow(2).mean(dim=-1)    # (B, L)
        w = mask.to(per_patch.dtype)
        loss = (per_patch * w).sum() / w.sum()
        idx = masked.unsqueeze(-1).expand(-1, -1, pred.shape[-1])
        n = mask.shape[1]
        return PretrainOutput(loss=loss, pred=pred.gather(1, idx), target=target.gather(1, idx), mask=mask,
                              centers=self.encoder.grid_coords.to(pred.dtype).expand(b, -1, -1), patches=target,
                              order=torch.arange(n, device=images.device).expand(b, -1))
