"""Multivariate normal distributions with a sparse triangular factor of the covariance or the precision.

Four parameterisations (``L`` lower triangular, sparse COO/CSR; ``D = diag(diagonal)``):

==========================  ==============================  ======================================
given                       meaning                         sample ``x = μ + …`` (``ε ~ N(0, I)``)
==========================  ==============================  ======================================
``scale_tril``              ``Σ = L Lᵀ``                    ``L ε``
``scale_tril, diagonal``    ``Σ = (I+L) D (I+L)ᵀ``          ``(I+L) (√D ε)``
``precision_tril``          ``Ω = L Lᵀ``                    ``L⁻ᵀ ε``
``precision_tril, diag.``   ``Ω = (I+L) D (I+L)ᵀ``          ``(I+L)⁻ᵀ (ε / √D)``
==========================  ==============================  ======================================

A fifth form takes the sparse SPD precision itself, ``precision_matrix=Q`` (a Gaussian Markov
random field): it is factorised once, exactly, by tsgu-cholesky (``Q[perm][:, perm] = L Lᵀ``;
samples ``x = μ + Pᵀ L⁻ᵀ ε``, see :mod:`tsgu_distributions._precision`).

(with ``diagonal``, ``L`` stores the strictly lower part; a stored diagonal is read as
torchsparsegradutils 0.2.7 sampled it — added to the unit one for ``scale_tril``, ignored for
``precision_tril`` — with a one-time warning).  The log-density and the entropy follow
from the same factor in ``O(nnz + n)`` per sample — one sparse product or triangular solve, and the
log-determinant from the diagonal — without forming a dense matrix:

* ``log p(x) = −½ ‖z‖²_W − ½ log det Σ − (n/2) log 2π`` with ``z = L⁻¹(x−μ)`` (covariance forms) or
  ``z = Lᵀ(x−μ)`` (precision forms), ``W`` = ``D⁻¹``, ``D`` or ``I``;
* ``log det Σ = ±(2 Σ log |L_ii|)`` (LLᵀ) or ``±Σ log D_i`` (LDLᵀ), ``−`` for precision forms.

Gradients reach the factor's values as sparse gradients (tsgu-ops' operations), ``loc`` and
``diagonal`` as dense ones.  Batching: ``loc`` ``(*b, n)``, ``diagonal`` ``(*b, n)`` and a factor
``(n, n)`` or ``(B, n, n)`` broadcast together (the factor's batch is the last batch dimension; a
batch of one broadcasts), and ``sample_shape`` may be anything.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from torch.distributions import Distribution, constraints
from torch.distributions.utils import lazy_property
from tsgu_cholesky import factor_inverse_diagonal

from tsgu_ops import _checks
from tsgu_ops.internal import autocast_fp32

from ._factor import Factor, strictly_lower, unit_plus
from ._precision import Precision

__all__ = ["SparseMultivariateNormal", "SparseMultivariateNormalNative", "_batch_sparse_mv"]

_LOG_2PI = math.log(2 * math.pi)


def _check_values(name: str, t: torch.Tensor) -> None:
    """Dense parameters: float32/float64 data (not on the meta device)."""
    _checks.require_not_meta(name, t)
    if t.layout != torch.strided:
        raise ValueError(f"{name} must be a dense (strided) tensor, got {t.layout}")
    _checks.require_value_dtype(name, t, _checks.FLOAT_DTYPES)


def _check_tril(name: str, t: Any) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.layout not in (torch.sparse_coo, torch.sparse_csr):
        raise ValueError(f"{name} must be sparse COO or CSR, instead of {t.layout}")
    if t.dim() not in (2, 3):
        raise ValueError(f"{name} must be 2-D (n, n) or batched 3-D (B, n, n), got shape {tuple(t.shape)}")
    if t.shape[-1] != t.shape[-2]:
        raise ValueError(f"{name} must be square, got shape {tuple(t.shape)}")
    _checks.require_no_dense_dims(name, t)
    _checks.check_sparse_indices(name, t)
    _checks.require_value_dtype(name, t, _checks.FLOAT_DTYPES)
    # The factor is used as given: an uncoalesced COO factor keeps its own index list (its gradient
    # too) and a batch of one broadcasts over the batch shape without being indexed.
    return t


def _check_value(value: Any, loc: torch.Tensor, batch_shape: torch.Size) -> None:
    """``log_prob``'s argument: a dense real tensor on ``loc``'s device, ``(..., n)`` broadcasting
    with the batch shape (checked whatever ``validate_args`` says: the alternative is a crash deep
    inside torch)."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"value must be a torch.Tensor, got {type(value).__name__}")
    _checks.require_not_meta("value", value)
    if value.layout != torch.strided:
        raise ValueError(f"value must be a dense (strided) tensor, got {value.layout}")
    if value.is_complex():
        raise TypeError(f"value must be real (float32 or float64), got {value.dtype}")
    if value.device != loc.device:
        raise ValueError(f"value must be on loc's device {loc.device}, got {value.device}")
    n = loc.shape[-1]
    try:
        if value.dim() < 1 or value.shape[-1] != n:
            raise RuntimeError
        torch.broadcast_shapes(value.shape[:-1], batch_shape)
    except RuntimeError:
        raise ValueError(
            f"value must have shape (..., {n}) broadcasting with the batch shape {tuple(batch_shape)}, "
            f"got {tuple(value.shape)}"
        ) from None


#: Parameterisations for which the one-time warning about a stored diagonal was already shown.
_WARNED_STORED_DIAGONAL: set[str] = set()


def _warn_stored_diagonal(name: str) -> None:
    if name in _WARNED_STORED_DIAGONAL:
        return
    _WARNED_STORED_DIAGONAL.add(name)
    if name == "scale_tril":
        msg = (
            "scale_tril stores diagonal entries although `diagonal` is given (LDLᵀ form). As in "
            "torchsparsegradutils 0.2.7 they add to the implicit unit diagonal: the factor is I + L "
            "(L with its stored diagonal), samples are loc + (I + L) D^½ ε and log_prob/entropy use "
            "Σ = (I + L) D (I + L)ᵀ. Store only the strictly lower part of L to silence this warning."
        )
    else:
        msg = (
            "precision_tril stores diagonal entries although `diagonal` is given (LDLᵀ form). As in "
            "torchsparsegradutils 0.2.7's sampling (a unit-triangular solve) they are ignored: the "
            "precision is (I + L₀) D (I + L₀)ᵀ with L₀ the strictly lower part, for rsample, log_prob "
            "and entropy alike, and the stored diagonal entries get a zero gradient. Store only the "
            "strictly lower part of L to silence this warning."
        )
    warnings.warn(msg, UserWarning, stacklevel=3)


class SparseMultivariateNormal(Distribution):
    """Multivariate normal with a sparse LLᵀ or LDLᵀ factor of its covariance or precision.

    Parameters
    ----------
    loc : Tensor
        Mean, ``(*batch, n)``; float32 or float64.
    diagonal : Tensor, optional
        ``D`` of an LDLᵀ factorisation, positive, ``(*batch, n)``; with it the factor ``L`` is
        meant to store only its strictly lower part (the unit diagonal is implicit).  A factor
        that stores diagonal entries anyway is accepted as torchsparsegradutils 0.2.7 accepted it,
        with a one-time ``UserWarning``: for ``scale_tril`` the stored diagonal adds to the unit
        one (factor ``I + L``, samples ``loc + (I + L) D^½ ε``); for ``precision_tril`` it is
        ignored (0.2.7's unit-triangular solve skipped it).  ``log_prob``, ``entropy`` and the
        gradients use the same matrix as the samples.
    scale_tril : Tensor, optional
        Sparse (COO or CSR, int32/int64 indices) lower-triangular factor of the covariance,
        ``(n, n)`` or ``(B, n, n)``; a batch of one broadcasts.  Used as given: an uncoalesced COO
        factor is not coalesced, and its gradient has its own index list.
    precision_tril : Tensor, optional
        Sparse lower-triangular factor of the precision (exactly one of the two is given).
    precision_matrix : Tensor, optional (keyword only)
        Instead of a factor: the sparse symmetric positive definite precision ``Q`` itself (a
        Gaussian Markov random field), COO or CSR, int32/int64 indices, ``(n, n)`` or
        ``(B, n, n)`` (a batch of one broadcasts); an uncoalesced COO ``Q`` is the sum of its
        duplicates.  It is factorised once, exactly (tsgu-cholesky, ``Q[perm][:, perm] = L Lᵀ``):
        ``log_prob`` is ``−½ (x−μ)ᵀ Q (x−μ) + ½ log det Q − (n/2) log 2π`` (one sparse product and
        the factor's log-determinant), ``entropy`` uses ``log det Q``, ``variance`` is
        ``diag(Q⁻¹)`` by selected inversion, and samples are ``μ + Pᵀ L⁻ᵀ ε``.  Gradients reach
        ``Q``'s values sparsely (its layout, pattern and index dtype) through ``log_prob``,
        ``entropy``, ``variance`` and ``rsample`` (a sample's gradient with respect to ``Q`` is
        the reverse mode of the sparse factorisation, in about the work of the factorisation;
        differentiable once: ``create_graph=True`` through a sample raises ``RuntimeError``).
        ``Q``'s symmetry and positive definiteness are always checked (by the factorisation);
        not combined with ``diagonal``.
    validate_args : bool, optional
        As in ``torch.distributions``: ``None`` follows
        :meth:`~torch.distributions.Distribution.set_default_validate_args` (on unless Python runs
        with ``-O``).  When on, the constructor also checks that the factor stores nothing above
        the diagonal and, in the LLᵀ forms, a positive value on every diagonal entry; that
        ``diagonal`` is positive; and ``log_prob`` checks its ``value``.  The checks cost
        ``O(nnz)`` and one host synchronisation.  Shapes, dtypes, devices and the factor's index
        structure are checked always.

    Raises
    ------
    TypeError
        A parameter is not a tensor, has a dtype other than float32/float64, or the dtypes differ.
    ValueError
        The messages of 0.2.7 (rank of ``loc``, one factor exactly, sparse layout, ``diagonal``
        shape), a factor that is not square or does not match ``loc``, malformed or out-of-range
        indices, a meta tensor, batch shapes that do not broadcast, and (validation on) a factor
        that is not lower triangular or, for LLᵀ, lacks a positive stored diagonal.

    Examples
    --------
    >>> import torch
    >>> from tsgu_distributions import SparseMultivariateNormal
    >>> L = torch.tensor([[2.0, 0.0], [0.5, 1.0]], dtype=torch.float64).to_sparse()
    >>> d = SparseMultivariateNormal(torch.zeros(2, dtype=torch.float64), scale_tril=L)
    >>> d.rsample((4, 3)).shape
    torch.Size([4, 3, 2])
    >>> zero = torch.zeros(2, dtype=torch.float64)
    >>> ref = torch.distributions.MultivariateNormal(zero, scale_tril=L.to_dense())
    >>> x = torch.tensor([0.3, -1.0], dtype=torch.float64)
    >>> bool(torch.isclose(d.log_prob(x), ref.log_prob(x)))
    True

    A GMRF from its sparse precision (here a path graph's Laplacian plus the identity):

    >>> Qd = torch.tensor([[2.0, -1.0, 0.0], [-1.0, 3.0, -1.0], [0.0, -1.0, 2.0]], dtype=torch.float64)
    >>> Q = Qd.to_sparse_csr().requires_grad_()
    >>> g = SparseMultivariateNormal(torch.zeros(3, dtype=torch.float64), precision_matrix=Q)
    >>> ref = torch.distributions.MultivariateNormal(torch.zeros(3, dtype=torch.float64), precision_matrix=Qd)
    >>> y = torch.tensor([0.5, -0.2, 1.0], dtype=torch.float64)
    >>> bool(torch.isclose(g.log_prob(y), ref.log_prob(y)))
    True
    >>> torch.allclose(g.variance, ref.variance)
    True
    >>> g.log_prob(y).backward()
    >>> Q.grad.layout
    torch.sparse_csr
    """

    support = constraints.real_vector
    has_rsample = True

    @property
    def arg_constraints(self) -> dict[str, constraints.Constraint]:  # type: ignore[override]
        """``loc`` is a real vector and ``diagonal`` (when given) positive; the sparse factor is
        checked by ``validate_args=True`` itself (triangular, positive stored diagonal for LLᵀ)."""
        out: dict[str, constraints.Constraint] = {"loc": constraints.real_vector}
        if getattr(self, "_diagonal", None) is not None:
            out["diagonal"] = constraints.independent(constraints.positive, 1)
        return out

    @autocast_fp32
    def __init__(
        self,
        loc: torch.Tensor,
        diagonal: torch.Tensor | None = None,
        scale_tril: torch.Tensor | None = None,
        precision_tril: torch.Tensor | None = None,
        validate_args: bool | None = None,
        *,
        precision_matrix: torch.Tensor | None = None,
    ) -> None:
        self._gmrf: Precision | None = None
        if not isinstance(loc, torch.Tensor):
            raise TypeError(f"loc must be a torch.Tensor, got {type(loc).__name__}")
        if loc.dim() < 1:
            raise ValueError("loc must be at least one-dimensional.")
        _check_values("loc", loc)
        if precision_matrix is not None:
            if scale_tril is not None or precision_tril is not None or diagonal is not None:
                raise ValueError(
                    "Exactly one of scale_tril, precision_tril or precision_matrix may be specified "
                    "(and diagonal only with scale_tril or precision_tril)."
                )
            self._init_precision_matrix(loc, precision_matrix, validate_args)
            return
        if (scale_tril is None) == (precision_tril is None):
            raise ValueError("Exactly one of scale_tril or precision_tril may be specified.")
        event_shape = loc.shape[-1:]
        if diagonal is not None:
            if not isinstance(diagonal, torch.Tensor) or diagonal.dim() < 1:
                raise ValueError("diagonal must be a tensor with at least one dimension")
            _check_values("diagonal", diagonal)
            if diagonal.shape[-1:] != event_shape:
                raise ValueError(f"diagonal must be a batch of vectors with shape {event_shape}")
        self._is_precision = precision_tril is not None
        name = "precision_tril" if self._is_precision else "scale_tril"
        tril = _check_tril(name, precision_tril if self._is_precision else scale_tril)
        if tril.shape[-1] != event_shape[0]:
            raise ValueError(
                f"{name} must be ({event_shape[0]}, {event_shape[0]}) to match loc's last dimension, "
                f"got {tuple(tril.shape)}"
            )
        if tril.dtype != loc.dtype or (diagonal is not None and diagonal.dtype != loc.dtype):
            got = f"loc: {loc.dtype}, {name}: {tril.dtype}"
            got += f", diagonal: {diagonal.dtype}" if diagonal is not None else ""
            raise TypeError(f"loc, diagonal and {name} must have the same dtype, got {got}")
        for other, t in (("diagonal", diagonal), (name, tril)):
            if t is not None and t.device != loc.device:
                raise ValueError(
                    f"loc and {other} must be on the same device, got loc: {loc.device}, {other}: {t.device}"
                )
        shapes = [loc.shape[:-1], tril.shape[:-2]] + ([diagonal.shape[:-1]] if diagonal is not None else [])
        try:
            batch_shape = torch.broadcast_shapes(*shapes)
        except RuntimeError as exc:
            raise ValueError(f"loc, diagonal and {name} batch shapes do not broadcast: {shapes}") from exc
        self._loc = loc
        self._diagonal = diagonal
        self._tril = tril
        ldlt = diagonal is not None
        given = Factor(tril, unit=ldlt)  # the factor as the user gave it (one index analysis)
        self._factor = given
        if ldlt and given.stores_diagonal():
            # 0.2.7 accepted a stored diagonal in the LDLᵀ forms; keep its numbers (see the warning).
            _warn_stored_diagonal(name)
            if self._is_precision:
                self._factor = Factor(strictly_lower(tril, given.pattern), unit=True)
            else:
                self._factor = Factor(unit_plus(tril, given.pattern), unit=False)
        super().__init__(batch_shape, event_shape, validate_args=validate_args)
        if self._validate_args:
            given.check(name)

    def _init_precision_matrix(self, loc: torch.Tensor, Q: Any, validate_args: bool | None) -> None:
        """The GMRF form: a sparse SPD precision ``Q``, factorised once here (tsgu-cholesky)."""
        name = "precision_matrix"
        Q = _check_tril(name, Q)  # the structural checks of a sparse square (batched) matrix
        n = loc.shape[-1]
        if Q.shape[-1] != n:
            raise ValueError(f"{name} must be ({n}, {n}) to match loc's last dimension, got {tuple(Q.shape)}")
        if Q.dtype != loc.dtype:
            raise TypeError(
                f"loc and {name} must have the same dtype, got loc: {loc.dtype}, {name}: {Q.dtype}"
            )
        if Q.device != loc.device:
            raise ValueError(
                f"loc and {name} must be on the same device, got loc: {loc.device}, {name}: {Q.device}"
            )
        shapes = [loc.shape[:-1], Q.shape[:-2]]
        try:
            batch_shape = torch.broadcast_shapes(*shapes)
        except RuntimeError as exc:
            raise ValueError(f"loc and {name} batch shapes do not broadcast: {shapes}") from exc
        self._loc, self._diagonal, self._tril, self._factor = loc, None, None, None  # type: ignore[assignment]
        self._is_precision = True
        self._gmrf = Precision(Q)  # symmetry and positive definiteness are checked here, always
        super().__init__(batch_shape, loc.shape[-1:], validate_args=validate_args)

    # -- parameters -------------------------------------------------------------------------------
    @property
    def loc(self) -> torch.Tensor:
        return self._loc

    @property
    def diagonal(self) -> torch.Tensor | None:
        return self._diagonal

    @property
    def scale_tril(self) -> torch.Tensor | None:
        """The covariance factor, or ``None`` when the precision was given."""
        return None if self._is_precision else self._tril

    @property
    def precision_tril(self) -> torch.Tensor | None:
        """The precision factor, or ``None`` when the covariance was given."""
        return self._tril if self._is_precision else None

    @property
    def is_ldlt_parameterization(self) -> bool:
        return self._diagonal is not None

    @property
    def mean(self) -> torch.Tensor:
        return self._loc.expand(self.batch_shape + self.event_shape)

    @property
    def mode(self) -> torch.Tensor:
        return self.mean

    @lazy_property
    @autocast_fp32
    def variance(self) -> torch.Tensor:  # type: ignore[override]
        """Exact marginal variances ``diag(Σ)``.

        Covariance forms: ``O(nnz)`` from the factor.  Precision forms: ``diag(Ω⁻¹)`` by selected
        inversion (Takahashi's recurrences, :func:`tsgu_cholesky.factor_inverse_diagonal`) on the
        given factor, whose pattern is first closed under elimination (cost and memory of the
        order of the filled factor; none added for a factor made by a Cholesky factorisation);
        ``precision_matrix``: on its Cholesky factor.  Differentiable once.
        """
        shape = self.batch_shape + self.event_shape
        if self._gmrf is not None:  # diag(Q⁻¹) by selected inversion on Q's factor
            return self._gmrf.inverse_diagonal().expand(shape)
        f = self._factor
        if self._is_precision:  # selected inversion on the given factor (no factorisation)
            return factor_inverse_diagonal(f.L, self._diagonal).expand(shape)
        if self._diagonal is None:
            var = f.row_sum_sq()
        else:  # Σ_ii = Σ_j M_ij² D_j with M = I + L (L's stored diagonal, if any, is in M)
            D = self._diagonal.expand(self.batch_shape + self.event_shape)
            var = D + f.row_sum_sq(D) if f.unit else f.row_sum_sq(D)
        return var.expand(self.batch_shape + self.event_shape)

    @property
    def stddev(self) -> torch.Tensor:
        return self.variance.sqrt()

    def _dense_factor_products(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Dense ``(M, D)``: the represented matrix is ``M D Mᵀ`` (``D`` = 1 for LLᵀ)."""
        warnings.warn(
            "building a dense n × n matrix from a sparse factor: use only for small n",
            UserWarning,
            stacklevel=3,
        )
        M = self._factor.dense()
        D = (
            self._diagonal
            if self._diagonal is not None
            else torch.ones(self.event_shape, dtype=M.dtype, device=M.device)
        )
        return M, D

    @lazy_property
    @autocast_fp32
    def covariance_matrix(self) -> torch.Tensor:
        """Dense covariance (with a warning; ``O(n²)`` memory)."""
        if self._gmrf is not None:
            warnings.warn(
                "covariance_matrix is a dense n × n inverse: use only for small n", UserWarning, stacklevel=2
            )
            cov = self._gmrf.covariance()
            return cov.expand(self.batch_shape + self.event_shape + self.event_shape)
        M, D = self._dense_factor_products()
        S = (M * D.unsqueeze(-2)) @ M.mT
        if self._is_precision:
            S = torch.cholesky_inverse(torch.linalg.cholesky(S))
        return S.expand(self.batch_shape + self.event_shape + self.event_shape)

    @lazy_property
    @autocast_fp32
    def precision_matrix(self) -> torch.Tensor:
        """Dense precision (with a warning; ``O(n²)`` memory); ``precision_matrix=Q`` given: ``Q`` itself."""
        if self._gmrf is not None:
            return self._gmrf.Q
        M, D = self._dense_factor_products()
        P = (M * D.unsqueeze(-2)) @ M.mT
        if not self._is_precision:
            P = torch.cholesky_inverse(torch.linalg.cholesky(P))
        return P.expand(self.batch_shape + self.event_shape + self.event_shape)

    # -- log-determinant, sampling, density -------------------------------------------------------
    def _half_log_det_cov(self) -> torch.Tensor:
        """``½ log det Σ``, shaped like the batch."""
        if self._gmrf is not None:  # ½ log det Σ = −½ log det Q
            return (-0.5 * self._gmrf.logdet()).expand(self.batch_shape)
        f, D = self._factor, self._diagonal
        parts = [] if f.unit else [f.diagonal().abs().log().sum(-1)]  # log |det M|, M = L or I + L
        if D is not None:
            parts.append(0.5 * D.log().sum(-1))
        h = parts[0] if len(parts) == 1 else parts[0] + parts[1]
        h = -h if self._is_precision else h
        return h.expand(self.batch_shape)

    @autocast_fp32
    def rsample(self, sample_shape: torch.Size | list[int] | tuple[int, ...] = torch.Size()) -> torch.Tensor:
        shape = self._extended_shape(torch.Size(sample_shape))
        eps = torch.randn(shape, dtype=self._loc.dtype, device=self._loc.device)
        return self._loc + self._transform(eps)

    def _transform(self, eps: torch.Tensor) -> torch.Tensor:
        if self._gmrf is not None:  # Pᵀ L⁻ᵀ ε with Q[perm][:, perm] = L Lᵀ
            return self._gmrf.sample(eps)
        f, D = self._factor, self._diagonal
        if not self._is_precision:
            return f.mv(eps if D is None else eps * D.sqrt())
        return f.solve(eps if D is None else eps / D.sqrt(), transpose=True)

    @autocast_fp32
    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        _check_value(value, self._loc, self.batch_shape)
        if self._validate_args:
            self._validate_sample(value)
        diff = value - self._loc
        shape = torch.broadcast_shapes(diff.shape, self.batch_shape + self.event_shape)
        diff = diff.expand(shape)
        if self._gmrf is not None:  # (x−μ)ᵀ Q (x−μ) by one sparse product
            n = self.event_shape[0]
            return -0.5 * (self._gmrf.quadratic(diff) + n * _LOG_2PI) - self._half_log_det_cov()
        f, D = self._factor, self._diagonal
        z = f.mv_t(diff) if self._is_precision else f.solve(diff)
        if D is None:
            maha = (z * z).sum(-1)
        else:
            maha = (z * z * D).sum(-1) if self._is_precision else (z * z / D).sum(-1)
        n = self.event_shape[0]
        return -0.5 * (maha + n * _LOG_2PI) - self._half_log_det_cov()

    @autocast_fp32
    def entropy(self) -> torch.Tensor:
        n = self.event_shape[0]
        return 0.5 * n * (1.0 + _LOG_2PI) + self._half_log_det_cov()

    def expand(
        self, batch_shape: torch.Size | list[int] | tuple[int, ...], _instance: Any = None
    ) -> SparseMultivariateNormal:
        batch_shape = torch.Size(batch_shape)
        new = self._get_checked_instance(SparseMultivariateNormal, _instance)
        loc = self._loc.expand(batch_shape + self.event_shape)
        diagonal = None if self._diagonal is None else self._diagonal.expand(batch_shape + self.event_shape)
        new._loc, new._diagonal, new._tril, new._factor = loc, diagonal, self._tril, self._factor
        new._is_precision = self._is_precision
        new._gmrf = self._gmrf
        super(SparseMultivariateNormal, new).__init__(batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new


class SparseMultivariateNormalNative(Distribution):
    """Covariance ``L Lᵀ`` with a 2-D CSR ``L``, sampled with PyTorch's native sparse product.

    Kept for torchsparsegradutils 0.2.7 users; ``log_prob`` no longer densifies (a sparse triangular
    solve, ``O(nnz + n)`` per sample).

    Examples
    --------
    >>> import torch
    >>> from tsgu_distributions import SparseMultivariateNormalNative
    >>> L = torch.tensor([[1.0, 0.0], [0.5, 2.0]]).to_sparse_csr()
    >>> SparseMultivariateNormalNative(torch.zeros(2), L).rsample((5,)).shape
    torch.Size([5, 2])
    """

    arg_constraints = {"loc": constraints.real_vector}  # noqa: RUF012 - the torch.distributions convention
    support = constraints.real_vector
    has_rsample = True

    @autocast_fp32
    def __init__(
        self, loc: torch.Tensor, scale_tril: torch.Tensor, validate_args: bool | None = None
    ) -> None:
        if not isinstance(loc, torch.Tensor) or loc.dim() != 1:
            raise ValueError("loc must be one-dimensional for SparseMultivariateNormalNative.")
        if not isinstance(scale_tril, torch.Tensor) or scale_tril.layout != torch.sparse_csr:
            raise ValueError("scale_tril must be sparse CSR for SparseMultivariateNormalNative.")
        if scale_tril.dim() != 2:
            raise ValueError(
                "scale_tril must be two-dimensional (unbatched) for SparseMultivariateNormalNative."
            )
        if scale_tril.shape[0] != scale_tril.shape[1]:
            raise ValueError("scale_tril must be square.")
        if scale_tril.shape[0] != loc.shape[0]:
            raise ValueError("scale_tril must have the same size as loc.")
        _check_values("loc", loc)
        _checks.require_no_dense_dims("scale_tril", scale_tril)
        _checks.check_sparse_indices("scale_tril", scale_tril)
        _checks.require_value_dtype("scale_tril", scale_tril, _checks.FLOAT_DTYPES)
        if scale_tril.dtype != loc.dtype:
            raise TypeError(
                f"loc and scale_tril must have the same dtype, got loc: {loc.dtype}, "
                f"scale_tril: {scale_tril.dtype}"
            )
        self._loc = loc
        self._scale_tril = scale_tril
        self._factor = Factor(scale_tril, unit=False)
        super().__init__(torch.Size(), loc.shape, validate_args=validate_args)

    # ``loc`` and ``scale_tril`` are class-level (read-only) properties, as in 0.2.7.
    @property
    def loc(self) -> torch.Tensor:
        """The mean, ``(n,)``."""
        return self._loc

    @property
    def scale_tril(self) -> torch.Tensor:
        """The CSR covariance factor ``L`` (``Σ = L Lᵀ``), ``(n, n)``."""
        return self._scale_tril

    @property
    def mean(self) -> torch.Tensor:
        return self.loc

    @property
    def mode(self) -> torch.Tensor:
        return self.loc

    @property
    @autocast_fp32
    def covariance_matrix(self) -> torch.Tensor:
        warnings.warn(
            "covariance_matrix densifies the sparse factor: use only for small n", UserWarning, stacklevel=2
        )
        L = self._factor.dense()  # from the values: the gradient reaches scale_tril sparsely
        return L @ L.T

    @property
    @autocast_fp32
    def variance(self) -> torch.Tensor:
        warnings.warn("variance is a dense vector of the row sums of L²", UserWarning, stacklevel=2)
        return self._factor.row_sum_sq()

    @autocast_fp32
    def rsample(self, sample_shape: torch.Size | list[int] | tuple[int, ...] = torch.Size()) -> torch.Tensor:
        shape = self._extended_shape(torch.Size(sample_shape))
        eps = torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device)
        X = eps.reshape(-1, shape[-1]).T
        return self.loc + torch.sparse.mm(self.scale_tril, X).T.reshape(shape)

    @autocast_fp32
    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        _check_value(value, self.loc, self.batch_shape)
        if self._validate_args:
            self._validate_sample(value)
        z = self._factor.solve(value - self.loc)
        n = self.event_shape[0]
        return -0.5 * ((z * z).sum(-1) + n * _LOG_2PI) - self._factor.diagonal().log().sum(-1)


def _batch_sparse_mv(op: Any, bmat: torch.Tensor, bvec: torch.Tensor, **kwargs: Any) -> torch.Tensor:
    """``op(M, v)`` for the rank combinations of 0.2.7's private helper (kept for its users)."""
    if bmat.dim() == 2 and bvec.dim() == 1:
        return op(bmat, bvec.unsqueeze(-1), **kwargs).squeeze(-1)
    if bmat.dim() == 2 and bvec.dim() == 2:
        return op(bmat, bvec.T, **kwargs).T
    if bmat.dim() == 3 and bvec.dim() == 2:
        return op(bmat, bvec.unsqueeze(-1), **kwargs).squeeze(-1)
    if bmat.dim() == 3 and bvec.dim() == 3:
        return op(bmat, bvec.permute(1, 2, 0), **kwargs).permute(2, 0, 1)
    raise ValueError("Invalid dimensions for bmat and bvec")
