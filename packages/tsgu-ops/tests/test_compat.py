"""tsgu_ops._compat: the one place that knows which torch runs, and the declared version bounds."""

from __future__ import annotations

import re
import types
from pathlib import Path

import pytest
import torch

from tsgu_ops import SparsePattern, _compat, _kernels

PACKAGES = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2.5.1", (2, 5)),
        ("2.5.1+cu124", (2, 5)),
        ("2.13.0+cpu", (2, 13)),
        ("2.10.0a0+git1234abc", (2, 10)),
        ("3.0.0.dev20270101", (3, 0)),
    ],
)
def test_parse_torch_version_reads_major_and_minor(text, expected):
    assert _compat.parse_torch_version(text) == expected


@pytest.mark.parametrize("text", ["", "two.five", "2", "v2.5"])
def test_parse_torch_version_rejects_what_is_not_a_version(text):
    with pytest.raises(ValueError, match="version must look like"):
        _compat.parse_torch_version(text)


def test_running_torch_is_inside_the_supported_range():
    assert _compat.TORCH_VERSION == tuple(int(x) for x in torch.__version__.split(".")[:2])
    assert _compat.TORCH_VERSION >= _compat.MIN_TORCH


def test_require_torch_names_feature_and_both_versions():
    _compat.require_torch("anything", (2, 5), version=(2, 5))
    _compat.require_torch("anything", (2, 5), version=(3, 0))
    with pytest.raises(
        NotImplementedError, match=r"^grouped products needs torch >= 2\.10, found torch 2\.9$"
    ):
        _compat.require_torch("grouped products", (2, 10), version=(2, 9))


def test_custom_op_detection_needs_all_three_registration_apis():
    full = types.SimpleNamespace(custom_op=1, register_fake=1, register_autograd=1)
    assert _compat.has_custom_op(full)
    for missing in ("custom_op", "register_fake", "register_autograd"):
        partial = types.SimpleNamespace(**{k: 1 for k in vars(full) if k != missing})
        assert not _compat.has_custom_op(partial)
    # every supported torch (>= 2.5) has them: the custom operators are always registered
    assert _compat.HAS_CUSTOM_OP and _compat.HAS_REGISTER_VMAP


def test_the_kernels_use_the_compat_flags():
    assert _kernels.HAS_CUSTOM_OP is _compat.HAS_CUSTOM_OP
    assert _kernels.is_compiling is _compat.is_compiling
    assert _compat.is_compiling() is False
    assert torch.compile(lambda x: x + _compat.is_compiling(), backend="eager")(torch.zeros(1)).item() == 1.0


@pytest.mark.parametrize("transpose", [False, True])
def test_without_custom_ops_the_product_still_matches_dense(monkeypatch, transpose):
    """The fallback for a torch without ``custom_op`` (autograd Functions only) gives the same values."""
    monkeypatch.setattr(_kernels, "HAS_CUSTOM_OP", False)
    dense = torch.tensor([[2.0, 0.0, 1.0], [0.0, 3.0, 0.0], [4.0, 0.0, 5.0]], dtype=torch.float64)
    A = dense.to_sparse_csr()
    s = SparsePattern(A)
    values = A.values().clone().requires_grad_()
    X = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    Y = _kernels.mm(s, values, X, transpose)
    dense_leaf = dense.clone().requires_grad_()
    X_ref = X.detach().clone().requires_grad_()
    Y_ref = (dense_leaf.T if transpose else dense_leaf) @ X_ref
    torch.testing.assert_close(Y, Y_ref)
    G = torch.randn_like(Y)
    Y.backward(G)
    Y_ref.backward(G)
    torch.testing.assert_close(values.grad, dense_leaf.grad[dense != 0])
    torch.testing.assert_close(X.grad, X_ref.grad)


def _pyproject(pkg: Path) -> str:
    return (pkg / "pyproject.toml").read_text()


@pytest.mark.skipif(not (PACKAGES / "tsgu-ops" / "pyproject.toml").exists(), reason="needs the source tree")
@pytest.mark.parametrize(
    "pkg", sorted(p.name for p in PACKAGES.iterdir() if (p / "pyproject.toml").exists()) or ["none"]
)
def test_each_package_declares_the_bounds_the_matrix_proved(pkg):
    """requires-python and the torch lower bound are the oldest versions ``nox -s *_matrix`` runs."""
    text = _pyproject(PACKAGES / pkg)
    assert re.search(r'^requires-python = ">=3\.10"$', text, re.M), pkg
    lower = re.search(r'^\s*"torch>=(\d+)\.(\d+)"', text, re.M)
    assert lower is not None, pkg
    assert (int(lower.group(1)), int(lower.group(2))) == _compat.MIN_TORCH, pkg


def test_functorch_guard_names_the_transform_and_the_torch_needed_only_on_old_torch():
    bug = "savedLocalDispatchKeySet_.has_value() INTERNAL ASSERT FAILED"
    with pytest.raises(NotImplementedError, match=r"needs torch >= 2\.9, found torch 2\.5") as info:
        with _compat.functorch_bug_guard(version=(2, 5)):
            raise RuntimeError(bug)
    assert isinstance(info.value.__cause__, RuntimeError)
    with pytest.raises(RuntimeError, match="INTERNAL ASSERT"):  # a newer torch: not ours to explain
        with _compat.functorch_bug_guard(version=(2, 9)):
            raise RuntimeError(bug)
    with pytest.raises(RuntimeError, match=r"^other$"):  # any other error passes through
        with _compat.functorch_bug_guard(version=(2, 5)):
            raise RuntimeError("other")


def test_hessian_through_the_operators_matches_dense_or_raises_the_clear_error():
    """Forward-over-reverse: exact on torch >= 2.9; torch 2.5's functorch bug is a clear error."""
    from torch.func import hessian

    from tsgu_ops.nn import SparseParameter

    dense = torch.tensor([[1.0, 2.0, 0.0], [0.0, 3.0, 4.0]], dtype=torch.float64)
    W = SparseParameter(dense.to_sparse())
    B = torch.randn(3, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    rows, cols = dense.nonzero().unbind(1)

    def loss(v):
        return W.mm(B, values=v).sin().pow(2).sum()

    def dense_loss(v):
        return (torch.zeros_like(dense).index_put((rows, cols), v) @ B).sin().pow(2).sum()

    v = W.values.detach()
    if _compat.TORCH_VERSION < _compat.NESTED_VMAP_TORCH:
        with pytest.raises(NotImplementedError, match="forward-over-reverse"):
            hessian(loss)(v)
    else:
        torch.testing.assert_close(hessian(loss)(v), hessian(dense_loss)(v))
