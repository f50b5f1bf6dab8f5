"""Batched Gaussian-mixture entropy estimate for the DACER2 entropy regulator.

A diffusion policy has no tractable log-density, so the temperature controller cannot read the policy entropy off
directly. DACER instead samples K actions per state, fits a small full-covariance Gaussian mixture to them and uses
the mixture's entropy upper bound

    H <= sum_k w_k [A/2 (1 + log 2 pi) + 1/2 log det Sigma_k] - sum_k w_k log w_k

as the entropy signal. The reference is scikit-learn's ``GaussianMixture`` run once per state (a Python loop over
hundreds of states plus a device-to-host copy each time the regulator fires); this module fits all states at once
with one batched EM on torch tensors, inside a training step, on the policy's device and dtype.

Design constraints and why:

* No host synchronisation (no ``.item()``, no data-dependent Python branches, no ``nonzero``): a sync inside the
  training step stalls the GPU pipeline. Hence a *fixed* number of EM iterations instead of sklearn's tolerance
  test, ``cholesky_ex`` (the plain version checks for failure on the host), and ``torch.where`` for empty clusters.
* No RNG: the regulator must not consume or depend on the global random stream (that would change training
  trajectories whenever its period changes), and the estimate must be reproducible. Initialisation is therefore a
  deterministic quantile split along each state's principal direction, refined by a few batched k-means steps:
  sklearn's "k-means then EM" recipe minus the random seeding (_kmeans_init says why this split).
* Speed and degenerate inputs (identical samples, fewer distinct points than components, A = 1): see _Features,
  _mass_floor and _safe_cholesky.

The estimate is a control signal for the temperature, not a training loss, so everything runs under
``torch.no_grad``; differentiating through 50 EM steps would only store a long graph nobody uses.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

__all__ = [
    "GaussianMixtureFit",
    "fit_gmm",
    "gmm_entropy_upper_bound",
    "estimate_entropy",
]

# Lloyd steps after the quantile split. sklearn runs k-means to convergence
# before EM; on the well-separated or unimodal action clouds seen here a handful
# of steps reaches the same partition, and EM itself does the fine adjustment.
_KMEANS_ITERS = 10

# Power-iteration steps for each state's principal direction. An exact
# eigendecomposition (``eigh``) checks convergence on the host, so we iterate
# instead; the direction only seeds the split, so a rough estimate suffices.
_POWER_ITERS = 8


class GaussianMixtureFit(NamedTuple):
    """Per-state mixture parameters: weights [N, C], means [N, C, A], covariances [N, C, A, A]."""

    weights: torch.Tensor
    means: torch.Tensor
    covariances: torch.Tensor


def _mass_floor(dtype: torch.dtype) -> float:
    # Same floor sklearn adds to component masses: large enough that an empty
    # component divides 0 by a positive number, small enough to be invisible
    # for any component that owns even a fraction of one sample.
    return 10.0 * torch.finfo(dtype).eps


def _eye(dim: int, like: torch.Tensor) -> torch.Tensor:
    return torch.eye(dim, dtype=like.dtype, device=like.device)


def _safe_cholesky(cov: torch.Tensor, error_scale: torch.Tensor, n_terms: int = 1) -> torch.Tensor:
    """Lower Cholesky factor of cov [..., A, A] that never fails on rounding noise.

    error_scale [...] is the magnitude of the numbers cov was computed from; a
    rounding error of about A * eps * error_scale can push a thin covariance
    past reg_covar into indefiniteness (mostly in float32). n_terms is how many
    products each entry of cov sums: float32 sums of that many terms can be off
    by up to n_terms * eps * error_scale, which sizes the last-resort jitter.
    """
    # We cannot branch on a failed factorisation on the host, so every
    # candidate is computed and the first that succeeded is picked per matrix
    # with torch.where. Jittering unconditionally would be simpler, but it biases
    # log det visibly (0.03 nats seen in float32) for components that are thin
    # along some axis -- exactly the case where the plain factorisation works.
    #
    # The small jitter covers the rounding of one subtraction. It does not cover
    # a component that sits on one repeated point far from its state's centre:
    # heavily clipped actions pile up on the corners of the action box, the true
    # covariance there is reg_covar * I, and the moment form's accumulated
    # rounding (n_terms products of size error_scale) outweighs both reg_covar
    # and the small jitter. A failed factor carries a non-positive pivot, whose
    # log is NaN, so the entropy estimate and then alpha went non-finite
    # (multi-goal, k = 1.0: exploration noise of std ~2.5 on the [-1, 1] box).
    # The last candidate's jitter bounds that rounding, so it cannot fail on a
    # covariance that is positive semi-definite plus reg_covar in exact arithmetic.
    dim = cov.shape[-1]
    eye = _eye(dim, cov)
    eps = torch.finfo(cov.dtype).eps
    chol, info = torch.linalg.cholesky_ex(cov)
    jitter = 10.0 * dim * eps * error_scale
    chol_jittered, info_jittered = torch.linalg.cholesky_ex(cov + jitter[..., None, None] * eye)
    bound = 2.0 * dim * max(n_terms, 1) * eps * error_scale
    chol_bounded, _ = torch.linalg.cholesky_ex(cov + bound[..., None, None] * eye)
    fallback = torch.where((info_jittered == 0)[..., None, None], chol_jittered, chol_bounded)
    return torch.where((info == 0)[..., None, None], chol, fallback)


class _Features(NamedTuple):
    """Per-sample sufficient statistics phi(x) = [1, x, upper-triangle of x x^T].

    A Gaussian's log-density is linear in phi(x), and an M-step only needs the
    responsibility-weighted sums of phi(x). Both EM half-steps therefore become
    a single batched matmul against the same precomputed features, with the
    long K axis as a matmul dimension; building [N, C, K, A] difference tensors
    every iteration instead was ~3x slower on CPU. The price is cancellation in
    E[x x^T] - mu mu^T (and its E-step counterpart) when a thin component sits
    far from its state's centre; it only perturbs the EM path, because the
    covariances that are returned come from the exact _m_step_exact.
    """

    phi: torch.Tensor  # [N, K, F], F = 1 + A + A(A+1)/2
    phi_t: torch.Tensor  # [N, F, K], contiguous for the E-step matmul
    # Flat index maps between an A x A matrix and its upper triangle, used with
    # index_select (several times faster than 2-D advanced indexing on CPU).
    upper_of_full: torch.Tensor  # [A*A]: triangle position of entry (a, b)
    full_of_upper: torch.Tensor  # [A(A+1)/2]: flat position a*A + b of each triangle entry
    off_diag_factor: torch.Tensor  # [A(A+1)/2]: 1 on the diagonal, 2 off it


def _features(x: torch.Tensor) -> _Features:
    n_states, n_samples, dim = x.shape
    rows, cols = torch.triu_indices(dim, dim, device=x.device)
    upper_of_full = torch.empty(dim, dim, dtype=torch.long, device=x.device)
    pos = torch.arange(rows.numel(), device=x.device)
    upper_of_full[rows, cols] = pos
    upper_of_full[cols, rows] = pos
    ones = torch.ones(n_states, n_samples, 1, dtype=x.dtype, device=x.device)
    products = x.index_select(-1, rows) * x.index_select(-1, cols)
    phi = torch.cat([ones, x, products], dim=-1)
    return _Features(
        phi=phi,
        phi_t=phi.transpose(1, 2).contiguous(),
        upper_of_full=upper_of_full.flatten(),
        full_of_upper=rows * dim + cols,
        off_diag_factor=torch.where(rows == cols, 1.0, 2.0).to(x.dtype),
    )


def _m_step_fast(
    feats: _Features, resp: torch.Tensor, reg_covar: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """EM M-step from resp [N, C, K]; returns weights, means and covariance Cholesky factors."""
    n_states, n_components, _ = resp.shape
    dim = feats.phi.shape[-1] - feats.full_of_upper.numel() - 1
    stats = resp @ feats.phi  # [N, C, F]
    nk = stats[..., 0] + _mass_floor(resp.dtype)  # [N, C]
    means = stats[..., 1 : 1 + dim] / nk.unsqueeze(-1)
    second = stats[..., 1 + dim :].index_select(-1, feats.upper_of_full)
    second = second.view(n_states, n_components, dim, dim) / nk[..., None, None]
    cov = second - means.unsqueeze(-1) * means.unsqueeze(-2) + reg_covar * _eye(dim, second)
    # The cancellation error scales with the raw second moment, not with Sigma.
    error_scale = torch.diagonal(second, dim1=-2, dim2=-1).amax(dim=-1) + reg_covar
    chol = _safe_cholesky(cov, error_scale, n_terms=feats.phi.shape[1])
    weights = nk / nk.sum(dim=-1, keepdim=True)
    return weights, means, chol


def _e_step(
    feats: _Features, weights: torch.Tensor, means: torch.Tensor, chol: torch.Tensor
) -> torch.Tensor:
    """Responsibilities [N, C, K] under the mixture (weights, means, L L^T)."""
    dim = means.shape[-1]
    # Precision P = L^-T L^-1; inverting the A x A factor is cheap next to the
    # K-sample work, which is then the single matmul below.
    chol_inv = torch.linalg.solve_triangular(chol, _eye(dim, chol).expand_as(chol), upper=False)
    prec = chol_inv.transpose(-1, -2) @ chol_inv  # [N, C, A, A]
    prec_mean = (prec @ means.unsqueeze(-1)).squeeze(-1)  # [N, C, A]
    half_log_det = torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(dim=-1)  # [N, C]
    # log w_c + log N(x | mu_c, Sigma_c) + A/2 log(2 pi)
    #   = [log w_c - 1/2 log det Sigma_c - 1/2 mu^T P mu] + (P mu)^T x - 1/2 x^T P x,
    # which is linear in phi(x). Off-diagonal x_a x_b terms appear twice in
    # x^T P x, hence the factor 2 on the strict upper triangle. The shared
    # A/2 log(2 pi) cancels in the normalisation.
    quad = prec.flatten(-2).index_select(-1, feats.full_of_upper) * feats.off_diag_factor
    const = torch.log(weights) - half_log_det - 0.5 * (prec_mean * means).sum(dim=-1)
    coeffs = torch.cat([const.unsqueeze(-1), prec_mean, -0.5 * quad], dim=-1)  # [N, C, F]
    # weights >= floor / K > 0, so the log above is finite even for empty components.
    return torch.softmax(coeffs @ feats.phi_t, dim=1)


def _m_step_exact(x: torch.Tensor, resp: torch.Tensor, reg_covar: float) -> GaussianMixtureFit:
    """sklearn's M-step (centred differences, no cancellation), resp [N, C, K]."""
    dim = x.shape[-1]
    nk = resp.sum(dim=-1) + _mass_floor(resp.dtype)  # [N, C]
    means = (resp @ x) / nk.unsqueeze(-1)
    diff = x.unsqueeze(1) - means.unsqueeze(2)  # [N, C, K, A]
    cov = (diff * resp.unsqueeze(-1)).transpose(-1, -2) @ diff / nk[..., None, None]
    # Symmetrise: the matmul is only symmetric up to rounding, and Cholesky
    # reads one triangle, so asymmetry would silently bias log det.
    cov = 0.5 * (cov + cov.transpose(-1, -2)) + reg_covar * _eye(dim, cov)
    weights = nk / nk.sum(dim=-1, keepdim=True)
    return GaussianMixtureFit(weights, means, cov)


def _principal_direction(x: torch.Tensor) -> torch.Tensor:
    """Approximate leading eigenvector of each state's covariance; x is centred, [N, K, A]."""
    cov = x.transpose(1, 2) @ x  # [N, A, A]; scale is irrelevant for the direction
    # Start from the sample farthest from the mean: it is almost never
    # orthogonal to the principal axis (a fixed start vector such as all-ones
    # can be), and argmax/gather need no host round trip.
    far = x.square().sum(dim=-1).argmax(dim=1)  # [N]
    v = torch.gather(x, 1, far[:, None, None].expand(-1, 1, x.shape[-1])).squeeze(1)
    tiny = torch.finfo(x.dtype).tiny
    for _ in range(_POWER_ITERS):
        v = v / v.norm(dim=-1, keepdim=True).clamp_min(tiny)
        v = (cov @ v.unsqueeze(-1)).squeeze(-1)
    return v / v.norm(dim=-1, keepdim=True).clamp_min(tiny)


def _kmeans_init(x: torch.Tensor, n_components: int) -> torch.Tensor:
    """Deterministic hard assignments [N, C, K] (one-hot over C) for centred x [N, K, A]. Splitting along the
    principal direction puts the initial centres where the data is most spread out; chunk *means* of the sorted
    projections (not extreme points) keep the start insensitive to outliers; the k-means steps then fix clusters
    that overlap along that one direction."""
    n_states, n_samples, _ = x.shape
    direction = _principal_direction(x)
    proj = torch.einsum("nka,na->nk", x, direction)
    # Stable sort so that ties (e.g. identical samples) resolve by index and the
    # result is reproducible across devices.
    order = torch.sort(proj, dim=1, stable=True).indices
    # Rank r goes to chunk floor(r * C / K): C contiguous, near-equal quantile
    # groups. K and C are shapes, so this is static and sync-free.
    rank_label = (
        torch.arange(n_samples, device=x.device) * n_components // n_samples
    ).expand(n_states, -1)
    labels = torch.empty_like(order).scatter_(1, order, rank_label)
    onehot = _one_hot(labels, n_components, x.dtype)

    centres = _cluster_means(x, onehot)
    for _ in range(_KMEANS_ITERS):
        # argmin_c |x - c|^2 = argmin_c (|c|^2 - 2 x.c): one matmul, and the
        # |x|^2 term, which the argmin ignores, is never formed.
        score = centres.square().sum(dim=-1).unsqueeze(1) - 2.0 * (x @ centres.transpose(1, 2))
        labels = score.argmin(dim=-1)  # [N, K]
        onehot = _one_hot(labels, n_components, x.dtype)
        counts = onehot.sum(dim=1)  # [N, C]
        new_centres = _cluster_means(x, onehot)
        # An emptied cluster keeps its previous centre instead of collapsing to
        # the origin; EM will then give it a negligible weight if it stays empty.
        centres = torch.where((counts > 0).unsqueeze(-1), new_centres, centres)
    return onehot.transpose(1, 2)


def _one_hot(labels: torch.Tensor, n_classes: int, dtype: torch.dtype) -> torch.Tensor:
    # F.one_hot validates the label range with a host read on some backends;
    # a broadcast comparison cannot sync anywhere.
    classes = torch.arange(n_classes, device=labels.device)
    return (labels.unsqueeze(-1) == classes).to(dtype)


def _cluster_means(x: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
    counts = onehot.sum(dim=1).clamp_min(1.0)
    return torch.einsum("nkc,nka->nca", onehot, x) / counts.unsqueeze(-1)


@torch.no_grad()
def fit_gmm(
    samples: torch.Tensor,
    n_components: int = 3,
    n_iter: int = 50,
    reg_covar: float = 1e-6,
) -> GaussianMixtureFit:
    """Fit one full-covariance Gaussian mixture per state, all states at once.

    Args:
        samples: [N, K, A] floating tensor, K samples in A dimensions for each of
            N states. Any device; float32 or float64 (computation stays in that
            dtype). For rank-deficient clouds (e.g. samples on a tilted line) the
            covariance in the null directions is at float32 rounding level,
            comparable to reg_covar=1e-6, so the log det there, and with it the
            entropy, is only reproducible to a few nats; pass float64 if that matters.
        n_components: mixture components C per state (K must be >= C).
        n_iter: EM iterations, always all of them: there is no convergence test
            because checking one would need a host sync. Clearly separated
            modes converge within ~20 iterations, so 50 leaves margin. When
            components overlap heavily the likelihood is flat and EM crawls;
            there neither 50 iterations nor sklearn's default stopping rule
            reaches the optimum, and the bound is only pinned down to a few
            tenths of a nat (run to convergence it drifts by up to ~0.4 nats
            in 1-2 D). Cost is linear in n_iter.
        reg_covar: added to every covariance diagonal, as in scikit-learn.

    Returns:
        GaussianMixtureFit with weights [N, C], means [N, C, A], covariances [N, C, A, A].
    """
    if samples.dim() != 3:
        raise ValueError(f"samples must be [N, K, A], got shape {tuple(samples.shape)}")
    if not samples.is_floating_point():
        raise TypeError(f"samples must be floating point, got {samples.dtype}")
    if samples.shape[1] < n_components:
        raise ValueError(
            f"need at least n_components={n_components} samples per state, got {samples.shape[1]}"
        )
    if n_iter < 0:
        raise ValueError(f"n_iter must be >= 0, got {n_iter}")

    samples = samples.detach()
    # Centring per state is free and removes the cancellation that large action
    # offsets would cause in float32 covariance sums; it does not change any
    # covariance or weight, only the means, which are shifted back at the end.
    centre = samples.mean(dim=1, keepdim=True)
    x = samples - centre
    feats = _features(x)

    # Same schedule as sklearn: an M-step from the k-means partition, then
    # n_iter (E-step, M-step) rounds; only the last M-step needs to be exact.
    resp = _kmeans_init(x, n_components)
    for _ in range(n_iter):
        weights, means, chol = _m_step_fast(feats, resp, reg_covar)
        resp = _e_step(feats, weights, means, chol)
    fit = _m_step_exact(x, resp, reg_covar)
    return fit._replace(means=fit.means + centre)


def gmm_entropy_upper_bound(weights: torch.Tensor, covariances: torch.Tensor) -> torch.Tensor:
    """Entropy upper bound of a Gaussian mixture, per state.

    H = sum_k w_k [A/2 (1 + log 2 pi) + 1/2 log det Sigma_k] - sum_k w_k log w_k,
    i.e. the entropy of the joint (component, sample) distribution, which bounds
    the mixture entropy from above and is tight when the components do not overlap.

    Args:
        weights: [..., C] mixture weights (summing to 1 along the last axis).
        covariances: [..., C, A, A] component covariances.

    Returns:
        [...] entropies in nats.
    """
    dim = covariances.shape[-1]
    chol = _safe_cholesky(
        covariances, torch.diagonal(covariances, dim1=-2, dim2=-1).amax(dim=-1)
    )
    half_log_det = torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(dim=-1)
    component_entropy = 0.5 * dim * (1.0 + math.log(2.0 * math.pi)) + half_log_det
    # xlogy gives 0 for a zero weight, where w * log(w) would be 0 * -inf = NaN.
    weight_entropy = -torch.special.xlogy(weights, weights).sum(dim=-1)
    return (weights * component_entropy).sum(dim=-1) + weight_entropy


def estimate_entropy(
    samples: torch.Tensor,
    n_components: int = 3,
    n_iter: int = 50,
    reg_covar: float = 1e-6,
) -> torch.Tensor:
    """Per-state entropy estimate [N] of the distribution behind samples [N, K, A].

    Fits a Gaussian mixture per state with :func:`fit_gmm` and returns its
    entropy upper bound; average the result over states for the regulator.

    The bound is tight for well-separated modes but not for a unimodal cloud:
    EM then splits the one mode into C overlapping pieces and the bound exceeds
    the true entropy by the piece/sample mutual information, between 0 and
    log C (measured 0.5-0.95 nats for C=3 on a Gaussian; sklearn does the same).
    A target entropy for the regulator should be set on this scale, not on the
    analytic entropy of the intended policy.
    """
    fit = fit_gmm(samples, n_components=n_components, n_iter=n_iter, reg_covar=reg_covar)
    return gmm_entropy_upper_bound(fit.weights, fit.covariances)
