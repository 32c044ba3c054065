"""The parameter server's aggregation rules and the compensatory modulus (SPEC section 4).

Rules (what the PS does with what arrived):

- ``full``:       average the full gradients that arrived; lost devices are dropped;
- ``stale``:      as ``full``, but a lost device's last received gradient is reused;
- ``sign_reuse``: SP-FL: both packets -> g_k; sign only -> s_k * c (compensatory modulus);
                  sign lost -> dropped;
- ``no_reuse``:   sign-modulus packets without sign reuse (only full gradients count);
- ``signs``:      signSGD: scaled signs averaged, or a weighted majority vote.

The aggregate is ``weights @ U`` with one row of U per device, so that when everything arrives
every full-gradient rule performs exactly the arithmetic of plain FedSGD.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from spfl.transmission import Delivery, quantize_modulus, signs

RULES = ("full", "stale", "sign_reuse", "no_reuse", "signs")
COMPENSATIONS = ("received_mean", "previous_update", "scalar")


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

    # -- what the allocation needs before the round ------------------------------------------------
    def sign_importance_terms(self, uploads: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Per device <|g_k|, c> and ||c||^2 for the sign-packet utility (0 when no c exists)."""
        magnitude = uploads.abs()
        if self.compensation == "scalar":
            l1 = magnitude.double().sum(dim=1).cpu().numpy()
            per_entry = l1 / uploads.shape[1]
            return l1 * per_entry, per_entry**2 * uploads.shape[1]
        c = self._current_modulus()
        if c is None:
            zeros = np.zeros(uploads.shape[0])
            return zeros, zeros
        inner = (magnitude.double() @ c.double()).cpu().numpy()
        return inner, np.full(uploads.shape[0], float(c.double().square().sum()))

    def _current_modulus(self) -> torch.Tensor | None:
        if self.compensation == "previous_update":
            return None if self.previous_update is None else self.previous_update.abs()
        return self.modulus

    # -- the round ---------------------------------------------------------------------------------
    def aggregate(self, uploads: torch.Tensor, delivery: Delivery) -> torch.Tensor | None:
        """g_hat for this round, or None when nothing usable arrived (the model stays put)."""
        if self.rule == "signs":
            update = self._signs(uploads, delivery.sign_ok)
        else:
            rows, include = self._rows(uploads, delivery)
            update = self._weighted(rows, include)
        if update is not None:
            self.previous_update = update
        return update

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
            ok_index = torch.from_numpy(np.flatnonzero(ok)).to(decoded.device)
            self.stale[ok_index] = decoded[ok_index]
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
            self.modulus = w @ decoded[torch.from_numpy(np.flatnonzero(both)).to(decoded.device)].abs()
        if not sign_only.any():
            return decoded, both
        if self.compensation == "scalar":
            scale = uploads.abs().mean(dim=1, keepdim=True)
            compensated = signs(uploads) * scale
        else:
            c = self._current_modulus()
            if c is None:  # no modulus seen yet: the sign-only devices cannot be used
                return decoded, both
            compensated = signs(uploads) * c
        mask = torch.from_numpy(sign_only).to(decoded.device).unsqueeze(1)
        return torch.where(mask, compensated, decoded), delivery.sign_ok

    def _weights(self, include: np.ndarray) -> np.ndarray | None:
        if not include.any():
            return None
        masked = np.where(include, self.alpha, 0.0)
        total = masked.sum() if self.normalize == "received" else self.alpha.sum()
        return masked / total

    def _weighted(self, rows: torch.Tensor, include: np.ndarray) -> torch.Tensor | None:
        weights = self._weights(include)
        if weights is None:
            return None
        return torch.as_tensor(weights, dtype=rows.dtype, device=rows.device) @ rows

    def _signs(self, uploads: torch.Tensor, arrived: np.ndarray) -> torch.Tensor | None:
        weights = self._weights(arrived)
        if weights is None:
            return None
        w = torch.as_tensor(weights, dtype=uploads.dtype, device=uploads.device)
        scale = uploads.abs().mean(dim=1)
        s = signs(uploads)
        if self.signsgd_aggregation == "mean":
            return w @ (s * scale.unsqueeze(1))
        return signs(w @ s) * (w @ scale)

    # -- checkpointing -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"modulus": self.modulus, "previous_update": self.previous_update, "stale": self.stale,
                "has_stale": self.has_stale.copy()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.modulus = state["modulus"]
        self.previous_update = state["previous_update"]
        self.stale = state["stale"]
        self.has_stale = np.asarray(state["has_stale"], dtype=bool)
