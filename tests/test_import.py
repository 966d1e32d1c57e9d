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
