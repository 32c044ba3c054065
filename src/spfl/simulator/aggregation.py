"""The parameter server's aggregation rules and the compensatory modulus (docs/model.md, "Aggregation").

Rules (what the PS does with what arrived):

- ``full``:       average the full gradients that arrived; lost devices are dropped;
- ``stale``:      as ``full``, but a lost device's last received gradient is reused;
- ``sign_reuse``: SP-FL: both packets -> g_k; sign only -> s_k * c (compensatory modulus);
                  sign lost -> dropped.  Before any modulus has arrived, a sign-only device's signs
                  are scaled by its own ||g_k|| / sqrt(d) (reported on the control channel);
- ``no_reuse``:   sign-modulus packets without sign reuse (only full gradients count);
- ``signs``:      signSGD: scaled signs averaged, or a weighted majority vote.

The aggregate is ``weights @ U`` with one row of U per device, so that when everything arrives
every full-gradient rule performs exactly the arithmetic of plain FedSGD.  Each rule also says what
one device's packets are worth to it (:meth:`Aggregator.packet_worths`), so that the allocation
maximizes the expectation of the surrogate of the aggregate this rule forms.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from spfl.simulator.allocation.objective import packet_worth
from spfl.simulator.transmission import Delivery, quantize_modulus, signs
from spfl.vocabulary import COMPENSATIONS

RULES = ("full", "stale", "sign_reuse", "no_reuse", "signs")
# Rules for which a sign packet that arrives without its modulus enters the aggregate (and its weight).
SIGN_ONLY_COUNTS = {"full": True, "stale": True, "sign_reuse": True, "no_reuse": False, "signs": True}
# Vectors each device sketches for the allocator (spfl.simulator.gram): its gradient, and its sign form when the rule
# uses one (the PS holds the stale gradients itself).
REPORTED_VECTORS = {"full": 1, "stale": 1, "sign_reuse": 2, "no_reuse": 1, "signs": 2}


class Aggregator:
    """Turns one round's uploads and their delivery into the update direction g_hat."""

    def __init__(self, rule: str, alpha: np.ndarray, *, compensation: str = "received_mean",
                 normalize: str = "received", modulus_bits: int = 31, signsgd_aggregation: str = "mean"):
        if rule not in RULES:
            raise ValueError(f"aggregation rule {rule!r}: allowed {RULES}")
        if compensation not in COMPENSATIONS:
            raise ValueError(f"compensation {compensation!r}: allowed {COMPENSATIONS}")
        self.rule = rule
        self.alpha = np.asarray(alpha, dtype=float)
        self.compensation = compensation
        self.normalize = normalize
        self.modulus_bits = modulus_bits
        self.signsgd_aggregation = signsgd_aggregation
        self.modulus: torch.Tensor | None = None        # c: the last compensatory modulus
        self.previous_update: torch.Tensor | None = None
        self.stale: torch.Tensor | None = None          # last received gradient per device
        self.has_stale: np.ndarray = np.zeros(len(alpha), dtype=bool)
        self._work: torch.Tensor | None = None          # reused (K, d) scratch bytes, not state (see _scratch)

    @property
    def sign_only_counts(self) -> bool:
        """Whether a sign packet that arrives without its modulus enters the aggregate."""
        return SIGN_ONLY_COUNTS[self.rule]

    # -- what the allocation needs before the round ------------------------------------------------
    def packet_worths(self, uploads: torch.Tensor, learning_rate: float, smoothness: float
                      ) -> tuple[np.ndarray, np.ndarray]:
        """(U_s, U_m) per device: the one-step surrogate of a sign-only receipt and of a full gradient
        under this rule (docs/model.md, "Objective").  Single-packet rules are worth U_m per packet
        (U_s = U_m); signSGD's scaled sign is worth what a sign with its own scale is."""
        if self.rule in ("full", "stale", "no_reuse"):
            squared_norm, _, _ = self._terms(uploads, None)
        else:
            squared_norm, inner, c_squared = self._terms(uploads, "own" if self.rule == "signs" else self._sign_scale)
        zeros = np.zeros_like(squared_norm)
        full = packet_worth(squared_norm, zeros, zeros, learning_rate, smoothness)[1]
        if self.rule in ("full", "stale"):
            return full, full
        if self.rule == "no_reuse":
            return zeros, full
        sign = packet_worth(squared_norm, inner, c_squared, learning_rate, smoothness)[0]
        return (sign, sign) if self.rule == "signs" else (sign, full)

    def other_vectors(self, uploads: torch.Tensor) -> torch.Tensor | None:
        """r_k per device: what this rule may use of device k besides its full gradient (the signs with
        the compensatory modulus known before the round, the scaled signs, the last received gradient),
        for the descent surrogate's inner products; None when the rule uses nothing else."""
        if self.rule == "sign_reuse":
            return signs(uploads) * self._compensation_scale(uploads)
        if self.rule == "signs":
            return signs(uploads) * uploads.abs().mean(dim=1, keepdim=True)
        if self.rule == "stale":
            return self.stale
        return None

    def sign_importance_terms(self, uploads: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Per device <|g_k|, c> and ||c||^2 of the compensatory modulus c known before the round."""
        _, inner, c_squared = self._terms(uploads, self._sign_scale)
        return inner, c_squared

    @property
    def _sign_scale(self) -> str:
        """What scales a sign-only device's signs: its own l1 scale (``scalar``) or the modulus c."""
        return "own" if self.compensation == "scalar" else "modulus"

    def _terms(self, uploads: torch.Tensor, scale: str | None
               ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """Per device ||g_k||^2 and, unless ``scale`` is None, <|g_k|, c> and ||c||^2 of the sign scale c:
        ``own``: c_k = ||g_k||_1 / d in every entry (a 32-bit scale per device); ``modulus``: the
        compensatory modulus known before the round, or before any arrived each device's own
        ||g_k|| / sqrt(d) (see _compensation_scale).

        Computed in a reused scratch buffer (a fresh K x d float64 tensor costs page faults every round,
        see spfl.simulator.training) by the same torch operations on the same float64 values as
        ``g.double().abs().sum(dim=1)``, ``g.double().square().sum(dim=1)`` and
        ``g.abs().double() @ c.double()``, so the numbers are those bit for bit (tests)."""
        d = uploads.shape[1]
        c = self._current_modulus() if scale == "modulus" else None
        l1 = inner_c = None
        if scale == "own" or scale == "modulus":
            magnitudes = self._scratch(uploads.shape, torch.float64, uploads.device)
            _float64_abs(uploads, magnitudes)
            if c is None:
                l1 = magnitudes.sum(dim=1)
            else:
                inner_c = magnitudes @ c.double()
        squared = self._squared_row_sums(uploads)  # after: it reuses the scratch
        squared_norm = squared.cpu().numpy()
        if scale is None:
            return squared_norm, None, None
        if scale == "own":
            l1_norm = l1.cpu().numpy()
            per_entry = l1_norm / d
            return squared_norm, l1_norm * per_entry, per_entry**2 * d
        if c is None:
            norm = squared.sqrt()
            return squared_norm, (l1 * norm / d**0.5).cpu().numpy(), norm.square().cpu().numpy()
        return squared_norm, inner_c.cpu().numpy(), np.full(uploads.shape[0], float(c.double().square().sum()))

    def _squared_row_sums(self, uploads: torch.Tensor) -> torch.Tensor:
        """``uploads.double().square().sum(dim=1)``.  On CPU a few rows at a time in the scratch, so that
        the squares are summed while still in cache: a CPU row sum never depends on the other rows
        (PyTorch splits a reduction across threads over its rows, and splits a row only when there is
        one row in all, hence blocks of two or three rows).  Elsewhere in one piece."""
        num, d = uploads.shape
        if uploads.device.type != "cpu":
            return self._scratch(uploads.shape, torch.float64, uploads.device).copy_(uploads).square_().sum(dim=1)
        work = self._scratch((min(num, 3), d), torch.float64, uploads.device)
        squared = torch.empty(num, dtype=torch.float64)
        start = 0
        while start < num:
            end = num if num - start <= 3 else start + 2
            squared[start:end] = work[:end - start].copy_(uploads[start:end]).square_().sum(dim=1)
            start = end
        return squared

    def _current_modulus(self) -> torch.Tensor | None:
        if self.compensation == "previous_update":
            return None if self.previous_update is None else self.previous_update.abs()
        return self.modulus

    # -- the round ---------------------------------------------------------------------------------
    def aggregate(self, uploads: torch.Tensor, delivery: Delivery) -> torch.Tensor | None:
        """g_hat for this round, or None when nothing usable arrived (the model stays put)."""
        if self.rule == "signs" and self.signsgd_aggregation == "majority":
            update = self._majority(uploads, delivery.sign_ok)
        else:
            weights, rows = self.contributions(uploads, delivery)
            update = None if weights is None else torch.as_tensor(weights, dtype=rows.dtype,
                                                                  device=rows.device) @ rows
        if update is not None:
            self.previous_update = update
        return update

    def contributions(self, uploads: torch.Tensor, delivery: Delivery) -> tuple[np.ndarray | None, torch.Tensor]:
        """(w, X): the aggregate is w @ X, one row X_k per device (what the PS uses of device k) and its
        weight w_k (0 for devices left out); w is None when nothing usable arrived.  The weighted
        majority vote of signSGD is the one rule that is not of this form.  Advances the rule's state
        (the stale gradients) exactly as :meth:`aggregate` does.  X may be a reused work buffer: it is
        valid until the next call on this aggregator."""
        if self.rule == "signs":
            rows = self._scratch(uploads.shape, uploads.dtype, uploads.device)
            scale = torch.abs(uploads, out=rows).mean(dim=1, keepdim=True)
            for k in range(uploads.shape[0]):
                torch.mul(signs(uploads[k]), scale[k], out=rows[k])
            return self._weights(delivery.sign_ok), rows
        rows, include = self._rows(uploads, delivery)
        return self._weights(include), rows

    def _decoded(self, uploads: torch.Tensor) -> torch.Tensor:
        """Full gradients as the PS decodes them (bit-exact for 31-bit moduli)."""
        if self.modulus_bits >= 31:
            return uploads
        return signs(uploads) * quantize_modulus(uploads.abs(), self.modulus_bits)

    def _rows(self, uploads: torch.Tensor, delivery: Delivery) -> tuple[torch.Tensor, np.ndarray]:
        decoded = self._decoded(uploads)
        if self.rule == "full":
            return decoded, delivery.sign_ok
        if self.rule == "stale":
            ok = delivery.sign_ok
            if self.stale is None:
                self.stale = torch.zeros_like(decoded)
            for k in np.flatnonzero(ok):
                self.stale[k].copy_(decoded[k])
            self.has_stale |= ok
            return self.stale, self.has_stale.copy()
        both = delivery.both_ok
        if self.rule == "no_reuse":
            return decoded, both
        # sign_reuse
        sign_only = delivery.sign_ok & ~both
        if self.compensation == "received_mean" and both.any():
            w = torch.as_tensor(self.alpha[both] / self.alpha[both].sum(), dtype=decoded.dtype,
                                device=decoded.device)
            index = torch.from_numpy(np.flatnonzero(both)).to(decoded.device)
            arrived = self._scratch((len(index), decoded.shape[1]), decoded.dtype, decoded.device)
            self.modulus = w @ torch.index_select(decoded, 0, index, out=arrived).abs_()
        if not sign_only.any():
            return decoded, both
        # Every row as decoded, the sign-only ones replaced by s_k * c: the same K x d matrix as
        # torch.where(sign_only, compensated, decoded), built in the work buffer row by row.
        rows = self._scratch(decoded.shape, decoded.dtype, decoded.device).copy_(decoded)
        scale = self._compensation_scale(uploads)
        for k in np.flatnonzero(sign_only):
            torch.mul(signs(uploads[k]), scale if scale.dim() == 1 else scale[k], out=rows[k])
        return rows, delivery.sign_ok

    def _compensation_scale(self, uploads: torch.Tensor) -> torch.Tensor:
        """What multiplies a sign-only device's signs: the modulus c (d entries), or per device (K x 1)
        its own scale: ||g_k||_1 / d under ``scalar``; ||g_k|| / sqrt(d) with no compensatory modulus
        yet (no modulus has arrived, or no update exists), which it reports on the control channel."""
        if self.compensation == "scalar":
            return uploads.abs().mean(dim=1, keepdim=True)
        c = self._current_modulus()
        if c is None:
            return uploads.norm(dim=1, keepdim=True) / uploads.shape[1] ** 0.5
        return c

    def _scratch(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """A work buffer of ``shape`` and ``dtype``, reused from round to round: a fresh K x d tensor is
        page-faulted in again every round (spfl.simulator.training).  One byte buffer serves every dtype and
        shape, so a caller must be done with one view before taking the next."""
        size = int(np.prod(shape)) * torch.empty((), dtype=dtype).element_size()
        if self._work is None or self._work.numel() < size or self._work.device != torch.device(device):
            self._work = None  # free the old buffer before allocating the new one
            self._work = torch.empty(size, dtype=torch.uint8, device=device)
        return self._work[:size].view(dtype).view(shape)

    def _weights(self, include: np.ndarray) -> np.ndarray | None:
        if not include.any():
            return None
        masked = np.where(include, self.alpha, 0.0)
        total = masked.sum() if self.normalize == "received" else self.alpha.sum()
        return masked / total

    def _majority(self, uploads: torch.Tensor, arrived: np.ndarray) -> torch.Tensor | None:
        """signSGD's weighted majority vote, scaled by the weighted mean of the devices' scales."""
        weights = self._weights(arrived)
        if weights is None:
            return None
        w = torch.as_tensor(weights, dtype=uploads.dtype, device=uploads.device)
        work = self._scratch(uploads.shape, uploads.dtype, uploads.device)
        scale = w @ torch.abs(uploads, out=work).mean(dim=1)
        for k in range(uploads.shape[0]):
            work[k] = signs(uploads[k])
        return signs(w @ work) * scale

    # -- checkpointing -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"modulus": self.modulus, "previous_update": self.previous_update, "stale": self.stale,
                "has_stale": self.has_stale.copy()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.modulus = state["modulus"]
        self.previous_update = state["previous_update"]
        self.stale = state["stale"]
        self.has_stale = np.asarray(state["has_stale"], dtype=bool)


_PIECE = 1 << 18  # float64 entries converted at a time: 2 MiB, still in cache for the abs that follows


def _float64_abs(source: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``out = |source|`` in float64 (exact), piece by piece on CPU so that each piece is converted and
    made absolute while in cache (elementwise, so the values are those of one whole-tensor pass)."""
    flat_in, flat_out = source.reshape(-1), out.view(-1)
    piece = _PIECE if source.device.type == "cpu" else flat_in.numel()
    for start in range(0, flat_in.numel(), piece):
        flat_out[start:start + piece].copy_(flat_in[start:start + piece]).abs_()
    return out
