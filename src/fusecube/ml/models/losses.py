"""Physics-style loss terms for NDVI cubes and their homoscedastic uncertainty weighting.

All terms take tensors shaped ``(batch, 1, time, y, x)`` (NDVI) or ``(batch, C, time, y, x)``
(S1 features) and return a scalar; masks are booleans of the NDVI's shape.

* observation consistency: squared error where NDVI is observed (the data term);
* NDVI range: squared excess outside ``[low, high]`` (NDVI is bounded; a regression head is not);
* temporal smoothness: squared second differences in time (vegetation changes gradually);
* S1-consistent change: NDVI change between consecutive dates is penalised where the radar
  backscatter did not change (a field whose VV/VH are steady has not been planted or harvested).

:class:`UncertaintyWeighting` combines them as ``sum_i exp(-s_i) L_i + s_i`` with a learnable
``s_i = log sigma_i^2`` per term (Kendall, Gal & Cipolla 2018), clamped so that a term that
reaches zero (the range term, often) cannot drive its weight to infinity.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from fusecube.errors import require

torch = require("torch", "ml")
nn = torch.nn

#: The loss terms, in order.
TERMS: tuple[str, ...] = ("observation", "range", "smoothness", "s1_change")


def masked_mse(pred, target, mask):
    """Mean squared error over ``mask`` (0 when the mask is empty, keeping the graph)."""
    weight = mask.to(pred.dtype)
    return (weight * (pred - target) ** 2).sum() / weight.sum().clamp_min(1.0)


def observation_loss(pred, observed, valid):
    """Squared error of the prediction where NDVI is observed (``valid``)."""
    return masked_mse(pred, observed, valid)


def range_loss(pred, low: float = -1.0, high: float = 1.0):
    """Mean squared excess of the prediction outside the NDVI range ``[low, high]``."""
    return (torch.relu(pred - high) ** 2 + torch.relu(low - pred) ** 2).mean()


def smoothness_loss(pred):
    """Mean squared second difference along time (needs at least 3 time steps, else 0)."""
    if pred.shape[-3] < 3:
        return pred.sum() * 0.0
    second = pred[..., 2:, :, :] - 2 * pred[..., 1:-1, :, :] + pred[..., :-2, :, :]
    return (second**2).mean()


def s1_change_loss(pred, s1, s1_valid=None, scale: float = 0.5):
    """NDVI change where the radar stayed steady: ``mean(exp(-|dS1| / scale) * dNDVI^2)``.

    Args:
        pred: ``(B, 1, T, Y, X)`` predicted NDVI.
        s1: ``(B, C, T, Y, X)`` normalised S1 features (e.g. z-scored dB VV and VH).
        s1_valid: ``(B, C, T, Y, X)`` bool, where the S1 values are real (not filled); steps
            touching an invalid value are ignored.
        scale: Radar change (in the units of ``s1``) at which the penalty falls to 1/e.
    """
    if pred.shape[-3] < 2:
        return pred.sum() * 0.0
    d_ndvi = pred[..., 1:, :, :] - pred[..., :-1, :, :]
    d_s1 = (s1[..., 1:, :, :] - s1[..., :-1, :, :]).abs().mean(dim=1, keepdim=True)
    steady = torch.exp(-d_s1 / scale)
    if s1_valid is not None:
        ok = (s1_valid[..., 1:, :, :] & s1_valid[..., :-1, :, :]).all(dim=1, keepdim=True)
        steady = steady * ok.to(steady.dtype)
    return (steady.detach() * d_ndvi**2).mean()


class UncertaintyWeighting(nn.Module):
    """``sum_i exp(-s_i) * L_i + s_i`` with learnable log-variances ``s_i`` (homoscedastic).

    Args:
        terms: Names of the loss terms.
        init: Initial ``s_i`` per term (default 0: weight 1).
        learnable: False keeps the weights fixed at ``exp(-init)`` (and drops the ``+ s_i``).
        bounds: ``s_i`` is clamped to this range (weights between ``exp(-high)`` and ``exp(-low)``).
    """

    def __init__(self, terms: Sequence[str] = TERMS, *, init: Mapping[str, float] | None = None,
                 learnable: bool = True, bounds: tuple[float, float] = (-3.0, 6.0)) -> None:
        super().__init__()
        self.terms = tuple(terms)
        init = dict(init or {})
        values = torch.tensor([float(init.get(t, 0.0)) for t in self.terms])
        self.log_vars = nn.Parameter(values, requires_grad=learnable)
        self.learnable = learnable
        self.bounds = bounds

    def weights(self) -> dict[str, float]:
        """The current weight ``exp(-s_i)`` of each term."""
        s = self.log_vars.detach().clamp(*self.bounds)
        return {t: float(torch.exp(-v)) for t, v in zip(self.terms, s, strict=True)}

    def forward(self, losses: Mapping[str, torch.Tensor]):
        """The weighted total of ``losses`` (terms missing from the mapping are skipped)."""
        s = self.log_vars.clamp(*self.bounds)
        total = 0.0
        for i, term in enumerate(self.terms):
            if term in losses:
                total = total + torch.exp(-s[i]) * losses[term].float()
                if self.learnable:
                    total = total + s[i]
        return total
