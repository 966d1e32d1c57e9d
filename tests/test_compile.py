"""torch.compile of the MAP pretrainer's training step on the CPU (dynamo + inductor).

Graph breaks of the pretrainer's forward (``torch._dynamo.explain``, tiny hybridnet_s, torch 2.14):

- none with the ``torch`` fps backend and masks drawn from the global RNG: one graph, so
  ``torch.compile(pretrainer, fullgraph=True)`` compiles forward and backward;
- fps's compiled kernels (the ``cpu`` / ``cuda`` backends, pybind functions of extensions/pointmap_ops)
  are opaque to dynamo: the step is cut around the fps call (3 graphs). Registering them as
  ``torch.library`` custom ops would remove that break;
- a ``torch.Generator`` passed to the pretrainer (``forward(x, generator=g)``): dynamo cannot put a
  Generator into a graph, so the step is cut at the mask draw. The Trainer and tools/benchmark.py pass none.

Breaks removed for this: boolean-mask indexing in the pretrainer (data-dependent shapes; now gathers of
the fixed visible / masked counts), knn's host-side "redo these rows" decision (under compile knn takes
the reference's stable sort, same answer), the ops' finite-input check (a host read; skipped while
compiling) and an ``out=`` into a slice in the chunked scan.
"""
import copy

import pytest
import torch

import pointmap
from pointmap.ops import available_backends, set_backend

TINY = dict(embed_dim=16, num_heads=2, num_group=4, group_size=4, layout="MT", drop_path_rate=0.0)
DEC = dict(decoder_heads=2, decoder_depth=1, decoder_drop_path_rate=0.0)


@pytest.fixture
def backends():
    """set_backend for the test, then back to auto; dynamo's caches cleared."""
    used = []

    def force(op, name):
        used.append(op)
        set_backend(op, name)
    yield force
    for op in used:
        set_backend(op, None)
    torch._dynamo.reset()


def tiny_pretrainer():
    torch.manual_seed(0)
    return pointmap.create_pretrainer("hybridnet_s", **DEC, **TINY)


def graphs(model, *args, **kwargs):
    torch._dynamo.reset()
    return torch._dynamo.explain(model)(*args, **kwargs)


@pytest.mark.slow
def test_pretrainer_graph_breaks(backends):
    pre, x = tiny_pretrainer(), torch.randn(2, 16, 3)
    backends("fps", "torch")
    ex = graphs(pre, x)
    assert (ex.graph_count, ex.graph_break_count) == (1, 0), ex.break_reasons
    ex = graphs(pre, x, generator=torch.Generator().manual_seed(0))
    assert ex.graph_break_count >= 1
    assert all(b.user_stack[-1].name == "make_mask" for b in ex.break_reasons), ex.break_reasons
    if "cpu" in available_backends("fps"):
        backends("fps", "cpu")
        assert graphs(pre, x).graph_count == 3  # cut around the fps extension call, nothing else


@pytest.mark.slow
def test_compiled_training_step_matches_eager(backends):
    """fullgraph=True with inductor: one SGD step of the compiled pretrainer equals the eager one.

    The smallest pretrainer that has both block kinds (G=4 patches of 4 points); still, inductor's first
    compile of its forward and backward took 6.5 min on 2 loaded cores (about 4 min of CPU time). Its
    FX graph cache makes later runs on the same machine faster."""
    import torch._inductor.config as inductor_config

    backends("fps", "torch")
    pre, x = tiny_pretrainer(), torch.randn(2, 16, 3)
    eager = copy.deepcopy(pre)
    compiled = torch.compile(pre, fullgraph=True)
    results = []
    with inductor_config.patch(fallback_random=True):  # the masks drawn as eager draws them
        for model, net in ((pre, compiled), (eager, eager)):
            # SGD, not Adam: Adam's first step is lr * sign(g), which turns 1e-9 noise in the gradient of
            # a bias in front of a BatchNorm (mathematically 0) into a full step
            opt = torch.optim.SGD(model.parameters(), lr=0.1)
            torch.manual_seed(3)
            loss = net(x).loss
            loss.backward()
            grads = [p.grad.clone() for p in model.parameters()]
            opt.step()
            results.append((loss.detach(), grads, [p.detach().clone() for p in model.parameters()]))
    (loss_c, grads_c, params_c), (loss_e, grads_e, params_e) = results
    assert torch.allclose(loss_c, loss_e, rtol=1e-5, atol=1e-6)
    for a, b in zip(grads_c, grads_e):
        assert (a - b).abs().max() <= 1e-5 * max(1.0, b.abs().max().item())
    for a, b in zip(params_c, params_e):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)
