import pytest
import torch

# Tests use tiny tensors: one intra-op thread avoids thread hand-off costs that dominate such ops
# (and that explode when the machine is shared), and keeps timings stable.
torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path_factory):
    """No test reaches the internet or the user's cache: downloads are off and go to a temporary home
    unless a test serves them itself (tests/_hub.py)."""
    monkeypatch.setenv("POINTMAP_OFFLINE", "1")
    monkeypatch.setenv("POINTMAP_HOME", str(tmp_path_factory.getbasetemp() / "pointmap_home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path_factory.getbasetemp() / "hf_hub_cache"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: a test that asks fails fast
    monkeypatch.delenv("POINTMAP_MIRROR", raising=False)


@pytest.fixture(autouse=True)
def _default_signals():
    """Each test starts with Python's own SIGINT / SIGTERM handlers, however pytest was launched (a shell's
    background job starts with SIGINT ignored, which a run then keeps ignoring), and gives back what it found."""
    import signal

    found = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    yield
    for sig, handler in found.items():
        signal.signal(sig, handler)


@pytest.fixture(autouse=True)
def _pointmap_logger():
    """Each test gives back the ``pointmap`` logger as it found it: a test that builds a run piece by piece
    (``Trainer.setup()``, ``RunDir.open()`` without ``fit()``'s scope) leaves no console or file handler for
    the next test's stdout (the library's own sessions restore it themselves: tests/test_process_scope.py)."""
    import logging

    from pointmap.engine.scope import _restore_logger  # what a ProcessScope does on exit

    log = logging.getLogger("pointmap")
    saved = (list(log.handlers), log.level, log.propagate)
    yield
    _restore_logger(log, *saved)
