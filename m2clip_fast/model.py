"""M2-CLIP on an open_clip backbone: our own block loop with adapters, the four-head decoder."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Optional

import open_clip
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch._subclasses.fake_tensor import is_fake

from kernels.runtime import backend as kernel_backend

from .adapters import BlockAdapters, QuickGELU, RunsOps, TEDAdapter, TemporalAdapter, TextAdapter, adapter_ops
from .blocks import layer_norm, run_block, run_blocks
from .config import M2CLIPConfig
from .losses import contrastive_kl_loss, crossmodal_classification_loss, masked_lm_loss


@dataclass
class VideoFeatures:
    embedding: torch.Tensor  # [B, D] video embedding (mean of frame embeddings), not normalised
    frame_embeddings: torch.Tensor  # [B, T, D] after the global temporal adapter
    class_logits: torch.Tensor  # [B, K] visual classification head


@dataclass
class TextFeatures:
    embedding: torch.Tensor  # [N, D] projected EOT feature, not normalised
    hidden: torch.Tensor  # [N, S, W] hidden states of the regular blocks, before ln_final


class MLMHead(nn.Module):
    """BERT-style word predictor: dense D→D, exact GELU, LayerNorm(eps 1e-12), decoder + bias.
    forward: ``[N, S, D]`` -> ``[N, S, V]``."""

    def __init__(self, dim: int, vocab_size: int) -> None:
        super().__init__()
        self.dense = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim, eps=1e-12)
        self.decoder = nn.Linear(dim, vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.norm(F.gelu(self.dense(x)))) + self.bias


def _project(x: torch.Tensor, proj: nn.Module | torch.Tensor) -> torch.Tensor:
    return proj(x) if isinstance(proj, nn.Module) else x @ proj


def check_label_range(labels: torch.Tensor, num_classes: int) -> None:
    """Labels ``[B]`` must lie in ``[0, num_classes)``. Checked where it costs no host-device sync and no graph
    break, on the CPU (data loaders check list labels; a GPU step never reads them back), and where the values
    exist (not a fake tensor of a trace: benchmarks/static/)."""
    checkable = labels.device.type == "cpu" and not torch.compiler.is_compiling() and not is_fake(labels)
    if checkable and labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}); got [{labels.min()}, {labels.max()}]")


class M2CLIP(nn.Module):
    """M2-CLIP (docs/DESIGN.md §1). Build with :func:`build_model`.

    Submodules: ``clip`` (the frozen open_clip CLIP), ``visual_adapters`` (one :class:`BlockAdapters` of
    TED-Adapters per vision block), ``temporal_adapter``, ``visual_head`` (Linear C→K), ``text_adapters``
    (one per text block plus one for the extra block), ``mlm_block`` (frozen copy of the last text
    block), ``mlm_head``. Only adapters and heads are trainable. ``backend``: what the adapters and the towers'
    QuickGELU run, ``"eager"`` (the reference) or ``"fused"`` (the Triton kernels); see :meth:`set_backend`.
    """

    def __init__(self, cfg: M2CLIPConfig, clip: nn.Module, backend: str = "eager") -> None:
        super().__init__()
        adapter_ops(backend)  # a bad name fails here, before anything is built
        self.cfg, self.backend = cfg, backend
        self.clip = clip
        visual = clip.visual
        vision_width = visual.conv1.out_channels
        embed_dim = int(visual.output_dim)
        text_width = clip.token_embedding.embedding_dim
        if text_width != embed_dim:
            raise ValueError(
                f"the MLM cross-attention needs text width == embed dim; backbone has {text_width} != {embed_dim}"
            )
        for block in (*visual.transformer.resblocks, *clip.transformer.resblocks):
            if not (isinstance(block.attn, nn.MultiheadAttention) and block.attn.batch_first):
                raise ValueError(
                    f"the backbone's blocks must be open_clip ResidualAttentionBlocks with batch-first "
                    f"nn.MultiheadAttention (open_clip >= 2.24 default configs); got {type(block).__name__}"
                )
        mask = getattr(clip, "attn_mask", None)
        if mask is None or not torch.equal(torch.isinf(mask), torch.ones_like(mask, dtype=torch.bool).triu(1)):
            raise ValueError("the text tower must use open_clip's causal attention mask (the blocks run "
                             "scaled_dot_product_attention with is_causal=True)")
        for block in (*visual.transformer.resblocks, *clip.transformer.resblocks):
            if isinstance(getattr(block.mlp, "gelu", None), open_clip.transformer.QuickGELU):  # OpenAI CLIP's towers
                block.mlp.gelu = QuickGELU(backend)
        self.visual_adapters = nn.ModuleList(
            BlockAdapters(lambda: TEDAdapter(vision_width, cfg.adapter_width, backend, cfg.ted_branches),
                          cfg.visual_adapter_positions, backend)
            for _ in visual.transformer.resblocks
        )
        self.temporal_adapter = TemporalAdapter(embed_dim, embed_dim // 2, backend)
        self.visual_dropout = nn.Dropout(cfg.visual_head_dropout)
        self.visual_head = nn.Linear(vision_width, cfg.num_classes)
        nn.init.normal_(self.visual_head.weight, std=0.02)
        nn.init.zeros_(self.visual_head.bias)

        text_depth = len(clip.transformer.resblocks) + 1  # + the extra MLM block
        last = cfg.text_adapter_last_blocks
        first_adapted = 0 if last is None else max(text_depth - last, 0)
        text_adapter_width = cfg.text_adapter_width or cfg.adapter_width
        self.text_adapters = nn.ModuleList(
            BlockAdapters(
                lambda: TextAdapter(text_width, text_adapter_width, backend),
                cfg.text_adapter_positions if i >= first_adapted else (),
                backend,
            )
            for i in range(text_depth)
        )
        self.frozen_text_prefix = first_adapted  # regular text blocks before the first adapter
        self.mlm_block = copy.deepcopy(clip.transformer.resblocks[-1])
        self.mlm_head = MLMHead(text_width, cfg.mlm_vocab_size)

        self.clip.requires_grad_(False)
        self.mlm_block.requires_grad_(False)

    # -- configuration ---------------------------------------------------------------------------
    def set_backend(self, backend: str) -> "M2CLIP":
        """Switch every adapter and QuickGELU between ``"fused"`` (the kernels) and ``"eager"`` (the reference);
        the parameters stay as they are."""
        ops = adapter_ops(backend)
        self.backend = backend
        for m in self.modules():
            if isinstance(m, RunsOps):
                m.ops = ops
        return self

    def store_frozen_in(self, dtype: torch.dtype) -> "M2CLIP":
        """Keep the frozen weights (the towers, the MLM block: every parameter that takes no gradient, but the
        0-dim ``logit_scale``) in ``dtype``, the autocast dtype: autocast re-casts only trainable weights once
        a step, a frozen one on every call. The state dict's keys stay; loading casts back as usual."""
        for p in self.parameters():
            if not p.requires_grad and p.dim() > 0 and p.is_floating_point():
                p.data = p.data.to(dtype)
        return self

    @property
    def adapter_backend(self) -> str:
        """What the adapters run: ``"eager"``, or with the fused backend what the fused ops run on this model's
        device — ``"triton"``, ``"triton (interpreter)"`` or ``"eager reference (why)"``
        (:func:`kernels.runtime.backend`: the one rule)."""
        return kernel_backend(next(self.parameters()).device) if self.backend == "fused" else "eager"

    @property
    def image_size(self) -> tuple[int, int]:
        size = self.clip.visual.image_size
        return tuple(size) if isinstance(size, (tuple, list)) else (size, size)

    @property
    def context_length(self) -> int:
        return int(self.clip.positional_embedding.shape[0])

    # -- vision ------------------------------------------------------------------------------------
    def _check_video(self, video: torch.Tensor) -> None:
        h, w = self.image_size
        if video.dim() != 5 or video.shape[1] != 3 or tuple(video.shape[3:]) != (h, w) or video.shape[2] < 1:
            raise ValueError(f"video must be [B, 3, T, {h}, {w}] with T >= 1; got {list(video.shape)}")
        if not video.is_floating_point():
            raise ValueError(f"video must be a float tensor (CLIP-normalised), got {video.dtype}")

    def _patch_tokens(self, frames: torch.Tensor) -> torch.Tensor:
        """frames ``[B*T, 3, H, W]`` -> tokens ``[B*T, 1 + h*w, C]`` after ``ln_pre``."""
        visual = self.clip.visual
        x = visual.conv1(frames).flatten(2).transpose(1, 2)
        cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)
        return layer_norm(visual.ln_pre, visual.patch_dropout(x))

    def encode_video(self, video: torch.Tensor) -> VideoFeatures:
        """video ``[B, 3, T, H, W]`` (CLIP-normalised) -> :class:`VideoFeatures`."""
        self._check_video(video)
        b, t = video.shape[0], video.shape[2]
        visual = self.clip.visual
        x = self._patch_tokens(rearrange(video, "b c t h w -> (b t) c h w"))
        grid = tuple(visual.grid_size)
        checkpointing = self.cfg.grad_checkpointing and self.training and torch.is_grad_enabled()
        x = run_blocks(visual.transformer.resblocks, self.visual_adapters, x, (t, grid), checkpointing=checkpointing)
        cls = x[:, 0]  # [B*T, C]
        frames = self.temporal_adapter(_project(layer_norm(visual.ln_post, cls), visual.proj), t)
        frames = frames.view(b, t, -1)
        pooled_cls = layer_norm(visual.ln_post, cls.view(b, t, -1).mean(dim=1))
        logits = self.visual_head(self.visual_dropout(pooled_cls))
        return VideoFeatures(frames.mean(dim=1), frames, logits)

    # -- text --------------------------------------------------------------------------------------
    def _check_tokens(self, tokens: torch.Tensor) -> None:
        if tokens.dim() != 2 or tokens.dtype != torch.long or not 1 <= tokens.shape[1] <= self.context_length:
            raise ValueError(
                f"tokens must be int64 [N, S] with 1 <= S <= {self.context_length}; "
                f"got {tokens.dtype} {list(tokens.shape)}"
            )

    def text_prefix(self, tokens: torch.Tensor) -> torch.Tensor:
        """Hidden states after the frozen, adapter-free leading text blocks ``[N, S, W]``.

        They depend on the tokens only, so a training loop may compute them once for the class prompts
        and pass them to :meth:`encode_text` (exact)."""
        self._check_tokens(tokens)
        s = tokens.shape[1]
        x = self.clip.token_embedding(tokens) + self.clip.positional_embedding[:s]
        return run_blocks(self.clip.transformer.resblocks[: self.frozen_text_prefix], self.text_adapters, x, causal=True)

    def encode_text(self, tokens: torch.Tensor, prefix: Optional[torch.Tensor] = None) -> TextFeatures:
        """tokens ``[N, S]`` int64, ``S <= 77`` -> :class:`TextFeatures`. ``prefix``: a cached
        :meth:`text_prefix` of the same tokens."""
        self._check_tokens(tokens)
        x = self.text_prefix(tokens) if prefix is None else prefix
        blocks, first = self.clip.transformer.resblocks, self.frozen_text_prefix
        x = run_blocks(blocks[first:], self.text_adapters[first:len(blocks)], x, causal=True)
        eot = layer_norm(self.clip.ln_final, x)[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)]
        return TextFeatures(_project(eot, self.clip.text_projection), x)

    def mlm_logits(self, hidden: torch.Tensor, frame_embeddings: torch.Tensor) -> torch.Tensor:
        """Cross-modal MLM: the extra block attends from text ``hidden [N, S, W]`` to
        ``frame_embeddings [N, T, D]``; -> word logits ``[N, S, mlm_vocab_size]``."""
        if hidden.dim() != 3 or frame_embeddings.dim() != 3 or hidden.shape[0] != frame_embeddings.shape[0]:
            raise ValueError(
                f"hidden [N, S, W] and frame_embeddings [N, T, D] must share N; "
                f"got {list(hidden.shape)} and {list(frame_embeddings.shape)}"
            )
        x = run_block(self.mlm_block, hidden, self.text_adapters[-1], memory=frame_embeddings)
        return self.mlm_head(layer_norm(self.clip.ln_final, x))

    # -- losses ------------------------------------------------------------------------------------
    def forward(self, *args, **kwargs) -> dict[str, torch.Tensor]:
        """Same as :meth:`compute_losses` (so that DistributedDataParallel sees the training step)."""
        return self.compute_losses(*args, **kwargs)

    def compute_losses(
        self,
        video: torch.Tensor,
        labels: torch.Tensor,
        class_tokens: torch.Tensor,
        mlm_tokens: Optional[torch.Tensor] = None,
        mlm_labels: Optional[torch.Tensor] = None,
        class_prefix: Optional[torch.Tensor] = None,
    ) -> dict[str, torch.Tensor]:
        """The four losses and their weighted ``total`` (docs/DESIGN.md §1.3).

        video ``[B, 3, T, H, W]``; labels ``[B]`` int64 in ``[0, K)`` (range-checked when on the CPU);
        class_tokens ``[K, S]``: the prompts of all K classes (a sample's prompt is ``class_tokens[label]``);
        mlm_tokens / mlm_labels ``[B, S']``: masked prompts and word targets, -100 = ignore (without them
        the MLM loss is 0); class_prefix: a cached ``text_prefix(class_tokens)``.
        """
        cfg = self.cfg
        if labels.dim() != 1 or labels.shape[0] != video.shape[0]:
            raise ValueError(f"labels must be [B] with B = {video.shape[0]}; got {list(labels.shape)}")
        if class_tokens.shape[0] != cfg.num_classes:
            raise ValueError(f"class_tokens has {class_tokens.shape[0]} prompts; the model has {cfg.num_classes} classes")
        check_label_range(labels, cfg.num_classes)
        if (mlm_tokens is None) != (mlm_labels is None):
            raise ValueError("pass both mlm_tokens and mlm_labels, or neither")

        vf = self.encode_video(video)
        video_emb = F.normalize(vf.embedding.float(), dim=-1)
        class_emb = F.normalize(self.encode_text(class_tokens, class_prefix).embedding.float(), dim=-1)
        losses = {
            "contrastive": contrastive_kl_loss(
                video_emb, class_emb[labels], labels, self.clip.logit_scale.exp(), cfg.contrastive_target_scale
            ),
            "crossmodal": crossmodal_classification_loss(
                video_emb, class_emb, labels, cfg.crossmodal_scale, cfg.crossmodal_loss
            ),
            "visual": F.cross_entropy(vf.class_logits.float(), labels),
        }
        if mlm_tokens is None:
            losses["mlm"] = video_emb.new_zeros(())
        else:
            if mlm_tokens.shape != mlm_labels.shape or mlm_tokens.shape[0] != video.shape[0]:
                raise ValueError(
                    f"mlm_tokens and mlm_labels must both be [B, S]; got {list(mlm_tokens.shape)}, {list(mlm_labels.shape)}"
                )
            hidden = self.encode_text(mlm_tokens).hidden
            losses["mlm"] = masked_lm_loss(self.mlm_logits(hidden, vf.frame_embeddings), mlm_labels)
        losses["total"] = sum(cfg.loss_weights[k] * losses[k] for k in ("contrastive", "crossmodal", "visual", "mlm"))
        return losses
