"""What the benchmarks measure, as code the benchmarks, the tests (a dry run at a small width), the static model and
the profiler all import: each op's inputs, fused and eager functions and cost (:func:`op_cases`), the providers
(:func:`provider_fn`), the timed passes (:func:`runner`), and the whole training step (:func:`train_step`).

Bytes are the compulsory traffic (every input read once, every output written once); FLOPs are
counted analytically (GEMMs 2·M·N·K; depthwise taps 2 per tap).
"""
from __future__ import annotations

import contextlib
import functools
import os
from dataclasses import dataclass
from typing import Callable, NamedTuple, Optional

import torch

import m2clip_fast as m2

from .harness import VIT_B16, VIT_L14, Width, rotating

PROVIDERS = os.environ.get("M2CLIP_BENCH_PROVIDERS", "fused,eager,compile,compile-max").split(",")
# The same ops replayed from CUDA graphs: device time alone, where launching no longer counts.
GRAPH_PROVIDERS = os.environ.get("M2CLIP_BENCH_GRAPH_PROVIDERS", "fused-graph,eager-graph").split(",")
QUICK = os.environ.get("M2CLIP_BENCH_QUICK", "0") == "1"  # trims the grid to fit a short GPU lease
DEVICE = "cuda"  # a module constant so the harness can be dry-run elsewhere
# torch.compile modes. compile-max autotunes its kernels like max-autotune, but without CUDA graphs: every
# provider is timed under the same launch conditions (graphs would help all of them alike), and graph
# replays would overwrite outputs that the rotated backward inputs still hold.
COMPILE_MODES = {"compile": None, "compile-max": "max-autotune-no-cudagraphs"}


@dataclass(frozen=True)
class OpCase:
    """make(width, B, T, dtype) -> inputs (all differentiable); fused/eager take them positionally.
    cost(width, B, T, elem_bytes) -> (fwd bytes, fwd flops, bwd bytes, bwd flops)."""

    make: Callable
    fused: Callable
    eager: Callable
    cost: Callable


def _param(*shape, dtype, scale=0.02):
    return (torch.randn(*shape, device=DEVICE) * scale).to(dtype).requires_grad_()


def _branch(width, ca, kernel, dtype):
    """One bottleneck branch laid out as the adapter modules store it (depthwise weight tap-major)."""
    from kernels.packing import tap_major

    conv = tap_major(_param(ca, 1, *kernel, dtype=dtype, scale=0.3).detach()).requires_grad_()
    return [_param(ca, width, dtype=dtype), _param(ca, dtype=dtype), conv,
            _param(ca, dtype=dtype), _param(width, ca, dtype=dtype), _param(width, dtype=dtype)]


def _ted_inputs(x, C, Ca, dtype):
    """x and both branches, the fc weights of the two branches packed as ``TEDAdapter`` packs them."""
    from kernels import BranchWeights
    from kernels.packing import pack_ted_adapter

    te, td = _branch(C, Ca, (3,), dtype), _branch(C, Ca, (3, 3), dtype)
    pack_ted_adapter([BranchWeights(*te), BranchWeights(*td)])
    return [x, *te, *td]


def _ted(impl, w: Width, T):
    from kernels import BranchWeights

    return lambda x, *p: impl.ted_adapter(x, T, w.grid, BranchWeights(*p[:6]), BranchWeights(*p[6:]))


def op_cases(w: Width, B: int, T: int) -> dict[str, OpCase]:
    """Every benchmarked op at width ``w``, ``B`` clips of ``T`` frames."""
    import kernels
    from kernels import BranchWeights, reference

    R, C, Ca, D = B * T * w.L, w.C, w.Ca, w.D
    S = 16  # text tokens per prompt

    def x(rows_shape, dtype):
        return torch.randn(*rows_shape, device=DEVICE).to(dtype).requires_grad_()

    ln_affine = (torch.randn(C, device=DEVICE) + 1, torch.randn(C, device=DEVICE))  # frozen fp32, as open_clip's
    gemm_pair = lambda rows, c, ca, e: (2 * rows * c * e, 4 * rows * c * ca, 3 * rows * c * e, 8 * rows * c * ca)  # noqa: E731
    return {
        "ted_adapter": OpCase(
            lambda dt: _ted_inputs(x((B * T, w.L, C), dt), C, Ca, dt),
            _ted(kernels, w, T), _ted(reference, w, T),
            lambda e: (2 * R * C * e, 8 * R * C * Ca + 26 * R * Ca, 3 * R * C * e, 16 * R * C * Ca + 52 * R * Ca)),
        "temporal_adapter": OpCase(
            lambda dt: [x((B * T, D), dt), *_branch(D, D // 2, (3,), dt)],
            lambda f, *p: kernels.temporal_adapter(f, T, BranchWeights(*p)),
            lambda f, *p: reference.temporal_adapter(f, T, BranchWeights(*p)),
            lambda e: gemm_pair(B * T, D, D // 2, e)),
        "text_adapter": OpCase(
            lambda dt: [x((B, S, D), dt), _param(Ca, D, dtype=dt), _param(Ca, dtype=dt), _param(D, Ca, dtype=dt),
                        _param(D, dtype=dt)],
            kernels.text_adapter, reference.text_adapter, lambda e: gemm_pair(B * S, D, Ca, e)),
        "quick_gelu": OpCase(  # the frozen vision MLP's activation, [B*T, L, 4C]
            lambda dt: [x((B * T, w.L, 4 * C), dt)], kernels.quick_gelu, reference.quick_gelu,
            lambda e: (2 * R * 4 * C * e, 4 * R * 4 * C, 3 * R * 4 * C * e, 8 * R * 4 * C)),
        "add_layer_norm": OpCase(  # a frozen ln_1 with the previous block's MLP output added: -> h, y [B*T, L, C]
            lambda dt: [x((B * T, w.L, C), dt), x((B * T, w.L, C), dt)],
            lambda stream, r: kernels.add_layer_norm(stream, *ln_affine, 1e-5, r),
            lambda stream, r: reference.add_layer_norm(stream, *ln_affine, 1e-5, r),
            lambda e: (4 * R * C * e, 8 * R * C, 4 * R * C * e, 10 * R * C)),
    }


def op_grid():
    """(op, width, B, T): the TED-Adapter over the whole grid, the other ops at B=8, T=8."""
    widths = [VIT_B16] if QUICK else [VIT_B16, VIT_L14]
    for w in widths:
        for T in ([8] if QUICK else [8, 16]):
            for B in ([8] if QUICK else [1, 8, 32]):
                yield "ted_adapter", w, B, T
        for op in ("temporal_adapter", "text_adapter", "quick_gelu", "add_layer_norm"):
            yield op, w, 8, 8


_COMPILED: dict = {}


def provider_fn(case: OpCase, op: str, provider: str) -> Callable:
    """The function a provider times: ``fused``, ``eager``, ``compile`` / ``compile-max`` (the eager function
    under torch.compile), each also as ``…-graph`` (the same function, replayed from CUDA graphs)."""
    provider = provider.removesuffix("-graph")  # the same function; only the timing differs
    if provider == "fused":
        return case.fused
    if provider == "eager":
        return case.eager
    if provider not in COMPILE_MODES:
        raise ValueError(f"unknown provider {provider!r}: expected fused, eager, {', '.join(COMPILE_MODES)} "
                         "(each optionally with -graph)")
    key = (op, provider)
    if key not in _COMPILED:
        mode = COMPILE_MODES[provider]
        _COMPILED[key] = torch.compile(case.eager, mode=mode, dynamic=False)
    return _COMPILED[key]


def runner(fn: Callable, make: Callable, passes: str, copies: int) -> Callable[[], None]:
    """The timed callable for one pass: forward; backward through stored graphs; or both. Inputs rotate
    over ``copies`` independently made sets; an op with several outputs takes a gradient into each."""
    def outputs(*inputs) -> tuple:
        out = fn(*inputs)
        return out if isinstance(out, tuple) else (out,)

    if passes == "bwd":
        def graph():
            inputs = make()
            out = outputs(*inputs)
            return inputs, out, tuple(map(torch.randn_like, out))

        graphs = rotating(graph, copies)

        def run_bwd():
            inputs, out, grad = graphs()
            torch.autograd.grad(out, inputs, grad, retain_graph=True)

        return run_bwd
    sets = rotating(make, copies)
    if passes == "fwd":
        return lambda: fn(*sets())
    grad = tuple(map(torch.randn_like, outputs(*sets())))

    def run_fwdbwd():
        inputs = sets()
        torch.autograd.grad(outputs(*inputs), inputs, grad)

    return run_fwdbwd


TRAIN_CLASSES = [f"action number {i}" for i in range(400)]


class TrainProvider(NamedTuple):
    """How a train-step provider runs the trainer's step."""

    backend: str  # the adapters' backend
    full: bool = False  # every CLIP weight trainable (full fine-tuning)
    ckpt: bool = False  # gradient checkpointing
    compile_mode: Optional[str] = None  # torch.compile of the model in this mode ("default": no mode)
    released: bool = False  # the released recipe: fp16 + GradScaler, fp32 frozen weights, open_clip's block
    graphs: bool = False  # the step replayed from CUDA graphs (m2clip_fast.graphs)


TRAIN_PROVIDERS = {
    "eager": TrainProvider("eager"),
    "eager+compile": TrainProvider("eager", compile_mode="default"),  # what a user would do instead
    "eager+graph": TrainProvider("eager", graphs=True),
    "fused": TrainProvider("fused"),
    "fused+graph": TrainProvider("fused", graphs=True),  # the trainer's default on a GPU
    "fused+reduce-overhead": TrainProvider("fused", compile_mode="reduce-overhead"),  # torch.compile's own graphs
    "fused+ckpt": TrainProvider("fused", ckpt=True),
    "full-finetune": TrainProvider("fused", full=True),  # the same fast step, every CLIP weight trainable
    "released": TrainProvider("eager", released=True),
}


def released_block(block, x, adapters, adapter_args=(), causal=False, memory=None):
    """``model.run_block`` as the released code runs it: open_clip's ``ResidualAttentionBlock`` pieces
    (``nn.MultiheadAttention`` with a mask tensor, LayerNorm under autocast's fp32 policy)."""
    if adapters.attn is not None:
        x = adapters.attn(x, *adapter_args)
    mask = None
    if causal:
        mask = torch.full((x.shape[1], x.shape[1]), float("-inf"), device=x.device).triu(1)
    kv = None if memory is None else block.ln_1(memory)
    x = x + block.ls_1(block.attention(block.ln_1(x), kv, kv, attn_mask=mask))
    if adapters.mlp is not None:
        x = adapters.mlp(x, *adapter_args)
    return x + block.ls_2(block.mlp(block.ln_2(x)))


def released_blocks(blocks, adapters, x, adapter_args=(), causal=False, checkpointing=False):
    """``model.run_blocks`` as the released code runs it: :func:`released_block` in turn (no checkpointing)."""
    for block, block_adapters in zip(blocks, adapters):
        x = released_block(block, x, block_adapters, adapter_args, causal)
    return x


def train_model(preset: str, provider: str, frames: int = 8, device: str = "cpu", amp: bool = True
                ) -> tuple[m2.M2CLIP, m2.PromptMasker]:
    """The model (random weights, :data:`TRAIN_CLASSES`) and prompt masker of a :data:`TRAIN_PROVIDERS`
    provider: its adapter backend, what trains, checkpointing; with ``amp`` the frozen towers stored in bf16 as
    the trainer stores them (not for ``released``, whose weights stay fp32)."""
    if provider not in TRAIN_PROVIDERS:
        raise ValueError(f"unknown train-step provider {provider!r}: expected one of {', '.join(TRAIN_PROVIDERS)}")
    backend, full, ckpt, _, released, _ = TRAIN_PROVIDERS[provider]
    torch.manual_seed(0)
    vocab = m2.MLMVocabulary.from_class_names(TRAIN_CLASSES)
    cfg = m2.M2CLIPConfig.preset(preset, num_classes=len(TRAIN_CLASSES), num_frames=frames,
                                 mlm_vocab_size=len(vocab), grad_checkpointing=ckpt)
    model = m2.build_model(cfg, backend=backend).to(device)
    if full:
        model.requires_grad_(True)
    if amp and not released:
        model.store_frozen_in(torch.bfloat16)
    return model, m2.PromptMasker(TRAIN_CLASSES, vocab)


class TrainStepCase(NamedTuple):
    step: Callable[[], None]  # one training step on a fixed batch
    params: list  # the parameters it trains
    model: torch.nn.Module  # the model it trains (the eager module, also under torch.compile)


def train_step(preset: str, batch: int, provider: str, device: str, frames: int = 8) -> TrainStepCase:
    """One M2-CLIP training step as the trainer runs it (:class:`m2clip_fast.engine.StepRunner`: the four losses
    with the cached class prefix, backward, AdamW, replayed from CUDA graphs for the ``+graph`` providers) on one
    fixed batch for a provider of :data:`TRAIN_PROVIDERS`."""
    from unittest import mock

    from m2clip_fast import model as model_module
    from m2clip_fast.distributed import Runtime
    from m2clip_fast.engine import StepRunner, StepSettings, TrainStep
    from m2clip_fast.optim import build_optimizer, place_state
    from m2clip_fast.prompts import make_prompts
    from m2clip_fast.run_state import Optimisation

    amp = device == "cuda"
    model, _ = train_model(preset, provider, frames, device, amp)  # refuses an unknown provider
    how = TRAIN_PROVIDERS[provider]
    graphs = how.graphs and device == "cuda"  # on a CPU the same step, uncaptured (as the trainer runs there)
    dtype = torch.float16 if how.released else torch.bfloat16
    autocast = functools.partial(torch.autocast, device, dtype=dtype, enabled=amp)
    blocks = (mock.patch.multiple(model_module, run_block=released_block, run_blocks=released_blocks) if how.released
              else contextlib.nullcontext())
    with blocks:
        prompts = make_prompts(model, TRAIN_CLASSES, torch.device(device), autocast)
    size = model.image_size[0]
    video = torch.randn(batch, 3, frames, size, size, device=device)
    labels = torch.arange(batch, device=device) % len(TRAIN_CLASSES)
    mlm = [t.to(device) for t in prompts.masker(labels.cpu(), 0.2, torch.Generator().manual_seed(0))]
    optimizer = build_optimizer(model, 1e-4, 1e-2, amp, graphs)  # fused on a GPU, as the trainer's
    place_state(optimizer, torch.device(device), amp, graphs)
    optim = Optimisation(optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0),
                         torch.amp.GradScaler(device, enabled=amp and how.released))
    mode = None if how.compile_mode in (None, "default") else how.compile_mode
    losses = torch.compile(model, mode=mode) if how.compile_mode else model
    run = TrainStep(losses, prompts, optim, autocast, Runtime(0, 1, torch.device(device)), graphs)
    runner = StepRunner(run, StepSettings(grad_accum=1, clip_grad=1.0, mask_rate=0.2, seed=0, log_interval=10))

    def step():
        with blocks:
            runner(video, labels, *mlm, update=True)

    return TrainStepCase(step, runner.params, model)


# Evaluation (issue 21): videos scored at the test views from decoded clips already in memory, as engine.evaluate
# scores a batch (engine.view_probabilities against the cached class embeddings), replayed from a CUDA graph for
# "+graph" (evaluate's default on a GPU), the eager model under torch.compile as the user's alternative.
EVAL_PROVIDERS = {"fused+graph": TrainProvider("fused", graphs=True), "fused": TrainProvider("fused"),
                  "eager": TrainProvider("eager"), "eager+compile": TrainProvider("eager", compile_mode="default")}


class EvalCase(NamedTuple):
    score: Callable[[], object]  # one batch of videos scored (every view of each)
    clips: int  # clips a batch: videos × views


def eval_batch(preset: str, videos: int, views: int, provider: str, device: str, frames: int = 8) -> EvalCase:
    """``videos`` videos of ``views`` clips each scored by a :data:`EVAL_PROVIDERS` provider, as
    ``engine.evaluate`` scores one loader batch."""
    from m2clip_fast.engine import class_embeddings, view_probabilities
    from m2clip_fast.graphs import GraphedCall
    from m2clip_fast.prompts import class_prompts

    if provider not in EVAL_PROVIDERS:
        raise ValueError(f"unknown evaluation provider {provider!r}: expected one of {', '.join(EVAL_PROVIDERS)}")
    how = EVAL_PROVIDERS[provider]
    amp = device == "cuda"
    model, _ = train_model(preset, "fused" if how.backend == "fused" else "eager", frames, device, amp)
    model.eval()
    autocast = functools.partial(torch.autocast, device, dtype=torch.bfloat16, enabled=amp)
    with torch.no_grad():
        class_emb = class_embeddings(model, class_prompts(model, TRAIN_CLASSES, torch.device(device), autocast),
                                     autocast)
    size = model.image_size[0]
    video = torch.randn(videos, views, 3, frames, size, size, device=device)
    fn = functools.partial(view_probabilities, model, class_emb=class_emb, autocast=autocast)
    score = GraphedCall(torch.compile(fn) if how.compile_mode else fn, how.graphs and device == "cuda")

    @torch.no_grad()
    def run():
        return score(video)

    return EvalCase(run, videos * views)
