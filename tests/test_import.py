"""pointmap imports and its ops run with none of the optional backends importable."""
import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BLOCKED = ["mamba_ssm", "triton", "pointnet2_ops", "knn_cuda", "open3d"]


def test_import_without_optional_packages():
    code = textwrap.dedent(f"""
        import sys
        BLOCKED = {BLOCKED!r}
        for name in BLOCKED:  # None in sys.modules: import raises, find_spec says "not installed"
            sys.modules[name] = None
        import pointmap
        from pointmap.ops import fps, knn, chamfer, group, serialize, selective_scan, available_backends
        import torch
        x = torch.rand(2, 128, 3)
        nb, c = group(x, 16, 8)
        perm = serialize(c, "hilbert")
        loss = chamfer(nb[:, 0], nb[:, 1])
        u = torch.randn(1, 4, 6)
        y = selective_scan(u, u.abs(), -torch.rand(4, 3), torch.randn(1, 3, 6), torch.randn(1, 3, 6))
        assert "mamba_ssm" not in available_backends("selective_scan")
        assert "pointnet2_ops" not in available_backends("fps")
        assert all(sys.modules[m] is None for m in BLOCKED)
        print("ok", tuple(nb.shape), tuple(perm.shape), tuple(y.shape))
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "ok (2, 16, 8, 3) (2, 16) (1, 4, 6)"


def test_env_report_lists_every_op():
    r = subprocess.run([sys.executable, "-m", "pointmap.env"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    for op in ("fps", "knn", "chamfer", "selective_scan"):
        assert op in r.stdout
    assert "torch=yes" in r.stdout


def test_env_says_first_what_rendering_lacks_and_the_apt_line(monkeypatch):
    import ctypes.util
    import glob

    from pointmap import env

    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    monkeypatch.setattr(glob, "glob", lambda pattern: [])
    problems = env.rendering_problems()
    assert problems[-1].startswith("fix: apt-get install libusb-1.0-0 libvulkan1 mesa-vulkan-drivers")
    assert any("libusb" in p for p in problems) and any("Vulkan loader" in p for p in problems)
    text = env.format_report({**env.report(), "rendering": problems})
    assert text.splitlines()[0].startswith("missing for rendering") and "apt-get install" in text.splitlines()[4]
