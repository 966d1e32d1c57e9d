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
