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

from spfl.allocation.objective import packet_worth
from spfl.transmission import Delivery, quantize_modulus, signs
from spfl.vocabulary import COMPENSATIONS

RULES = ("full", "stale", "sign_reuse", "no_reuse", "signs")
# Rules for which a sign packet that arrives without its modulus enters the aggregate (and its weight).
SIGN_ONLY_COUNTS = {"full": True, "stale": True, "sign_reuse": True, "no_reuse": False, "signs": True}


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
        squared_norm = uploads.double().square().sum(dim=1).cpu().numpy()
        zeros = np.zeros_like(squared_norm)
        full = packet_worth(squared_norm, zeros, zeros, learning_rate, smoothness)[1]
        if self.rule in ("full", "stale"):
            return full, full
        if self.rule == "no_reuse":
            return zeros, full
        if self.rule == "signs":
            inner, c_squared = self._own_scale_terms(uploads)
        else:
            inner, c_squared = self.sign_importance_terms(uploads)
        sign = packet_worth(squared_norm, inner, c_squared, learning_rate, smoothness)[0]
        return (sign, sign) if self.rule == "signs" else (sign, full)

    def sign_importance_terms(self, uploads: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Per device <|g_k|, c> and ||c||^2 of the compensatory modulus c known before the round."""
        if self.compensation == "scalar":
            return self._own_scale_terms(uploads)
        c = self._current_modulus()
        if c is None:  # nothing arrived yet: each device's own ||g_k|| / sqrt(d) (see _compensated)
            magnitude = uploads.double().abs()
            norm = magnitude.square().sum(dim=1).sqrt()
            inner = magnitude.sum(dim=1) * norm / uploads.shape[1] ** 0.5
            return inner.cpu().numpy(), norm.square().cpu().numpy()
        inner = (uploads.abs().double() @ c.double()).cpu().numpy()
        return inner, np.full(uploads.shape[0], float(c.double().square().sum()))

    @staticmethod
    def _own_scale_terms(uploads: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """<|g_k|, c_k> and ||c_k||^2 for c_k = ||g_k||_1 / d in every entry (a 32-bit scale per device)."""
        l1 = uploads.abs().double().sum(dim=1).cpu().numpy()
        per_entry = l1 / uploads.shape[1]
        return l1 * per_entry, per_entry**2 * uploads.shape[1]

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
        (the stale gradients) exactly as :meth:`aggregate` does."""
        if self.rule == "signs":
            return self._weights(delivery.sign_ok), signs(uploads) * uploads.abs().mean(dim=1, keepdim=True)
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
        compensated = self._compensated(uploads)
        mask = torch.from_numpy(sign_only).to(decoded.device).unsqueeze(1)
        return torch.where(mask, compensated, decoded), delivery.sign_ok

    def _compensated(self, uploads: torch.Tensor) -> torch.Tensor:
        """s_k * c for every device.  With no compensatory modulus yet (no modulus has arrived, or no
        update exists), each device's own ||g_k|| / sqrt(d), which it reports on the control channel."""
        if self.compensation == "scalar":
            return signs(uploads) * uploads.abs().mean(dim=1, keepdim=True)
        c = self._current_modulus()
        if c is None:
            return signs(uploads) * (uploads.norm(dim=1, keepdim=True) / uploads.shape[1] ** 0.5)
        return signs(uploads) * c

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
        return signs(w @ signs(uploads)) * (w @ uploads.abs().mean(dim=1))

    # -- checkpointing -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"modulus": self.modulus, "previous_update": self.previous_update, "stale": self.stale,
                "has_stale": self.has_stale.copy()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.modulus = state["modulus"]
        self.previous_update = state["previous_update"]
        self.stale = state["stale"]
        self.has_stale = np.asarray(state["has_stale"], dtype=bool)
