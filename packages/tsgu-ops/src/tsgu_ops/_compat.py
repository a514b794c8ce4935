"""Compatibility shims around PyTorch APIs that changed between versions: every torch-version check of
tsgu-ops (and of the packages built on it) lives here.

The supported range is torch >= 2.5 (``MIN_TORCH``); ``nox -s torch_matrix`` runs every package's
tests on torch 2.5.1, 2.9.1, 2.13.0 and 2.14.1, and ``docs/installation.md`` lists what each version
gets.  tsgu-indexed depends on torch alone and keeps its one fallback (the grouped product) in
``tsgu_indexed.indexed_matmul``.
"""

from __future__ import annotations

import contextlib
import functools
import re
import warnings
from collections.abc import Callable, Iterator
from typing import Any, ParamSpec, TypeVar

import torch

P = ParamSpec("P")
R = TypeVar("R")

#: The oldest torch every package is tested on and declares (``torch>=2.5`` in each pyproject.toml).
MIN_TORCH = (2, 5)


def parse_torch_version(version: str) -> tuple[int, int]:
    """``(major, minor)`` of a torch version string (local labels and pre-release tags ignored).

    Examples
    --------
    >>> from tsgu_ops._compat import parse_torch_version
    >>> parse_torch_version("2.5.1+cu124"), parse_torch_version("2.10.0a0+git1234")
    ((2, 5), (2, 10))
    """
    m = re.match(r"^(\d+)\.(\d+)", str(version))
    if m is None:
        raise ValueError(f"version must look like 'MAJOR.MINOR[...]', got {version!r}")
    return int(m.group(1)), int(m.group(2))


def quiet(fn: Callable[[], R]) -> R:
    """Run ``fn`` with PyTorch's sparse beta/invariant/deprecation warnings silenced.

    Which of these warnings a call raises depends on the torch version (``torch.triangular_solve``
    is deprecated since 2.x, the CSR beta warning comes and goes).
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Sparse CSR tensor support is in beta.*")
        warnings.filterwarnings("ignore", message=".*Sparse invariant checks are implicitly disabled.*")
        warnings.filterwarnings("ignore", message=".*torch.triangular_solve is deprecated.*")
        return fn()


#: ``(major, minor)`` of the running torch.
TORCH_VERSION = parse_torch_version(torch.__version__)


def has_custom_op(library: Any = torch.library) -> bool:
    """Whether ``library`` has ``custom_op`` with ``register_fake``/``register_autograd`` (torch >= 2.4)."""
    return all(hasattr(library, name) for name in ("custom_op", "register_fake", "register_autograd"))


#: ``torch.library.custom_op`` with ``register_fake``/``register_autograd`` (torch >= 2.4): the
#: value-level kernels of :mod:`tsgu_ops._kernels` are registered as custom operators only then;
#: without them every call goes through the autograd Functions (eager, no ``torch.compile`` graph).
HAS_CUSTOM_OP = has_custom_op()
#: ``torch.library.register_vmap`` (torch >= 2.4): a batching rule for the custom operators.
HAS_REGISTER_VMAP = hasattr(torch.library, "register_vmap")


def is_compiling() -> bool:
    """Whether the caller is being traced by ``torch.compile`` (dynamo) or exported.

    ``torch.compiler.is_compiling`` where it exists (torch >= 2.3), else ``torch._dynamo``'s.

    Examples
    --------
    >>> from tsgu_ops._compat import is_compiling
    >>> is_compiling()
    False
    """
    fn = getattr(getattr(torch, "compiler", None), "is_compiling", None)
    if fn is not None:
        return bool(fn())
    return bool(torch._dynamo.is_compiling())  # pragma: no cover - torch < 2.3


#: The oldest torch on which forward-over-reverse (``torch.func.hessian``, ``jacfwd(jacrev(f))``)
#: through the custom operators' vmap rules works.  torch 2.5.1 fails inside functorch there (an
#: internal assertion, ``savedLocalDispatchKeySet_``: a PyTorch bug); 2.9.1, the next version the
#: matrix runs, works.  ``grad``, ``jacrev``, ``vmap`` and ``vmap(grad)`` work on every version.
NESTED_VMAP_TORCH = (2, 9)


@contextlib.contextmanager
def functorch_bug_guard(version: tuple[int, int] | None = None) -> Iterator[None]:
    """Turn torch 2.5's functorch assertion in a custom operator's vmap rule into a clear error.

    Wraps the first tensor operation of each vmap rule of :mod:`tsgu_ops._kernels`; on a torch
    older than :data:`NESTED_VMAP_TORCH` that assertion becomes a ``NotImplementedError`` naming the
    transform and the torch needed.  Any other error passes through unchanged.

    Examples
    --------
    >>> from tsgu_ops._compat import functorch_bug_guard
    >>> with functorch_bug_guard(version=(2, 5)):  # doctest: +ELLIPSIS
    ...     raise RuntimeError("savedLocalDispatchKeySet_.has_value() INTERNAL ASSERT FAILED")
    Traceback (most recent call last):
    ...
    NotImplementedError: forward-over-reverse ... needs torch >= 2.9, found torch 2.5 ...
    """
    found = TORCH_VERSION if version is None else version
    try:
        yield
    except RuntimeError as err:
        if found < NESTED_VMAP_TORCH and "savedLocalDispatchKeySet_" in str(err):
            raise NotImplementedError(
                "forward-over-reverse (torch.func.hessian, jacfwd of jacrev) through tsgu operators "
                f"needs torch >= {NESTED_VMAP_TORCH[0]}.{NESTED_VMAP_TORCH[1]}, "
                f"found torch {found[0]}.{found[1]} (a functorch bug of that torch)"
            ) from err
        raise


def require_torch(feature: str, minimum: tuple[int, int], version: tuple[int, int] = TORCH_VERSION) -> None:
    """Raise ``NotImplementedError`` naming ``feature`` when torch is older than ``minimum``.

    Examples
    --------
    >>> from tsgu_ops._compat import require_torch
    >>> require_torch("complex CSR products", (2, 5), version=(2, 4))
    Traceback (most recent call last):
    ...
    NotImplementedError: complex CSR products needs torch >= 2.5, found torch 2.4
    """
    if version < minimum:
        raise NotImplementedError(
            f"{feature} needs torch >= {minimum[0]}.{minimum[1]}, found torch {version[0]}.{version[1]}"
        )


def linalg_solve_triangular_compat(
    A: torch.Tensor,
    B: torch.Tensor,
    *,
    upper: bool,
    unitriangular: bool = False,
    transpose: bool = False,
) -> torch.Tensor:
    """Triangular solve for a dense or sparse CSR ``A`` without deprecation warnings.

    A strided ``A`` goes to :func:`torch.linalg.solve_triangular` (``transpose`` transposes ``A``
    and flips ``upper``); a sparse ``A`` to one call of the sparse triangular kernel with PyTorch's
    deprecation warning silenced.

    Examples
    --------
    >>> import torch
    >>> from tsgu_ops._compat import linalg_solve_triangular_compat
    >>> A = torch.tensor([[2.0, 0.0], [1.0, 1.0]])
    >>> linalg_solve_triangular_compat(A, torch.tensor([[2.0], [2.0]]), upper=False)
    tensor([[1.],
            [1.]])
    """
    if A.layout == torch.strided:
        M = A.mT if transpose else A
        return torch.linalg.solve_triangular(M, B, upper=upper != transpose, unitriangular=unitriangular)
    return quiet(
        lambda: (
            torch.triangular_solve(
                B, A, upper=upper, transpose=transpose, unitriangular=unitriangular
            ).solution
        )
    )


# ------------------------------------------------------------------------------------------------
# The autocast policy of every public operation of the project.

#: Dtypes that an autocast region produces (and that the sparse kernels do not support).
AUTOCAST_DTYPES = (torch.float16, torch.bfloat16)
_AUTOCAST_DEVICES = ("cpu", "cuda")


def _autocast_active() -> str | None:
    """The device type whose autocast is enabled, if any (``None`` outside autocast regions)."""
    for device in _AUTOCAST_DEVICES:
        try:
            if torch.is_autocast_enabled(device):
                return device
        except TypeError:  # pragma: no cover - torch < 2.4 takes no device argument
            if device == "cuda" and torch.is_autocast_enabled():
                return device
    return None


def _to_fp32(x: Any) -> Any:
    if isinstance(x, torch.Tensor) and x.layout == torch.strided and x.dtype in AUTOCAST_DTYPES:
        return x.float()
    if isinstance(x, (list, tuple)) and any(isinstance(t, torch.Tensor) for t in x):
        return type(x)(_to_fp32(t) for t in x)
    return x


def autocast_fp32(fn: Callable[P, R]) -> Callable[P, R]:
    """Decorator: the project's one autocast policy (autocast's *fp32* list, like ``torch.linalg``).

    Outside an autocast region the call is unchanged.  Inside one (``torch.autocast("cpu")`` or
    ``("cuda")``, any lower-precision dtype) the operation runs with autocast disabled: dense
    operands of float16/bfloat16 dtype (what earlier autocast ops return) are cast to float32,
    every other argument is left as it is, and the result has the dtype of the (cast) operands,
    float32 or float64.  Sparse kernels have no half-precision implementation and Krylov
    recurrences lose their accuracy in it, so nothing is computed in 16 bits.  Outside autocast a
    half-precision operand is rejected with a ``TypeError`` as before.

    Examples
    --------
    >>> import torch
    >>> from tsgu_ops._compat import autocast_fp32
    >>> @autocast_fp32
    ... def mm(a, b):
    ...     return a @ b
    >>> with torch.autocast("cpu", dtype=torch.bfloat16):
    ...     mm(torch.ones(2, 2), torch.ones(2, 2).bfloat16()).dtype
    torch.float32
    """

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        device = _autocast_active()
        if device is None:
            return fn(*args, **kwargs)
        cargs = tuple(_to_fp32(a) for a in args)
        ckwargs = {k: _to_fp32(v) for k, v in kwargs.items()}
        with torch.autocast(device_type=device, enabled=False):
            return fn(*cargs, **ckwargs)  # type: ignore[arg-type]

    return wrapper
