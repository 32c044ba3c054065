"""The parameter server's aggregation rules (docs/model.md, "Aggregation"), one class per rule.

A rule turns what arrived of one round's packets (a :class:`~spfl.simulator.transmission.Delivery` and
the scheme's decoded :class:`~spfl.simulator.transmission.Payload`) into the update direction g_hat.
It also says, before the round, what one device's packets are worth to it (:meth:`Rule.packet_worths`)
and which vector besides the gradient it may use (:meth:`Rule.other_vectors`), so that the allocation
maximizes the expected surrogate of the aggregate this rule forms, and it keeps its own memory across
rounds.  The aggregate is ``w @ X`` with one row X_k per device, so that when everything arrives every
full-gradient rule performs exactly the arithmetic of plain FedSGD.

A new rule is one subclass of :class:`Rule` with ``@register``, plus its row in the method table
(spfl.configuration.methods).  The reused buffers and cache-sized pieces are spfl.simulator.kernels'.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from spfl.simulator import kernels
from spfl.simulator.allocation.descent import FULL, NOTHING, OTHER, DescentTerms
from spfl.simulator.allocation.objective import packet_worth
from spfl.simulator.transmission import Delivery, Payload, signs
from spfl.vocabulary import COMPENSATIONS


class Rule:
    """An aggregation rule and its memory, for one run.  Subclasses set the class attributes and
    :meth:`contributions`, and override :meth:`packet_worths` / :meth:`other_vectors` when a sign
    without its modulus is worth something to them."""

    name: ClassVar[str]
    sign_only_counts: ClassVar[bool] = True   # a sign that arrives without its modulus enters the aggregate
    reported_vectors: ClassVar[int] = 1       # vectors each device sketches for the allocator (spfl.simulator.gram)
    # What a device contributes when nothing / only the sign / both packets arrive (descent surrogate).
    outcomes: ClassVar[tuple[int, int, int]] = (NOTHING, FULL, FULL)

    def __init__(self, alpha: np.ndarray, *, compensation: str = "received_mean", normalize: str = "received",
                 signsgd_aggregation: str = "mean"):
        if compensation not in COMPENSATIONS:
            raise ValueError(f"compensation {compensation!r}: allowed {COMPENSATIONS}")
        self.alpha = np.asarray(alpha, dtype=float)
        self.compensation = compensation
        self.normalize = normalize
        self.signsgd_aggregation = signsgd_aggregation
        self.previous_update: torch.Tensor | None = None  # the last g_hat
        self.workspace = kernels.Workspace()              # reused K x d bytes, not state

    @property
    def num_devices(self) -> int:
        return len(self.alpha)

    # -- before the round --------------------------------------------------------------------------
    def packet_worths(self, uploads: torch.Tensor, learning_rate: float, smoothness: float
                      ) -> tuple[np.ndarray, np.ndarray]:
        """(U_s, U_m) per device: the one-step surrogate of a sign-only receipt and of a full gradient
        (docs/model.md, "Objective").  By default every packet that counts carries the full gradient:
        U_s = U_m."""
        full = packet_worth(self.squared_norms(uploads), 0.0, 0.0, learning_rate, smoothness)[1]
        return full, full

    def other_vectors(self, uploads: torch.Tensor) -> torch.Tensor | None:
        """r_k per device: what the rule may use of device k besides its full gradient, for the descent
        surrogate's inner products; None when it uses nothing else."""
        return None

    def descent_terms(self, gram: np.ndarray, learning_rate: float, smoothness: float) -> DescentTerms:
        """The descent surrogate's terms from the Gram matrix of [g; r] (:meth:`other_vectors`)."""
        return DescentTerms(gram, self.descent_states(), float(learning_rate), float(smoothness))

    def descent_states(self) -> np.ndarray:
        """(K, 3): each device's contribution per outcome (``outcomes``)."""
        return np.tile(np.array(self.outcomes), (self.num_devices, 1))

    def squared_norms(self, uploads: torch.Tensor) -> np.ndarray:
        """||g_k||^2 per device, in float64."""
        return kernels.squared_norms(uploads, self.workspace).cpu().numpy()

    # -- the round ---------------------------------------------------------------------------------
    def aggregate(self, payload: Payload, delivery: Delivery) -> torch.Tensor | None:
        """g_hat for this round, or None when nothing usable arrived (the model stays put)."""
        update = self.combine(payload, delivery)
        if update is not None:
            self.previous_update = update
        return update

    def combine(self, payload: Payload, delivery: Delivery) -> torch.Tensor | None:
        """w @ X of :meth:`contributions`."""
        weights, rows = self.contributions(payload, delivery)
        if weights is None:
            return None
        return torch.as_tensor(weights, dtype=rows.dtype, device=rows.device) @ rows

    def contributions(self, payload: Payload, delivery: Delivery) -> tuple[np.ndarray | None, torch.Tensor]:
        """(w, X): the aggregate is w @ X, one row X_k per device (what the PS uses of device k) and its
        weight w_k (0 for devices left out); w is None when nothing usable arrived.  Advances the rule's
        memory exactly as :meth:`aggregate` does.  X may be the workspace: valid until the next call."""
        raise NotImplementedError

    def weights(self, include: np.ndarray) -> np.ndarray | None:
        """alpha over the included devices, normalized by their total (``received``) or by all (``all``)."""
        if not include.any():
            return None
        masked = np.where(include, self.alpha, 0.0)
        total = masked.sum() if self.normalize == "received" else self.alpha.sum()
        return masked / total

    # -- checkpointing -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The rule's memory, in one record layout for every rule (entries it does not keep are empty)."""
        return {"modulus": None, "previous_update": self.previous_update, "stale": None,
                "has_stale": np.zeros(self.num_devices, dtype=bool), **self.memory()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.previous_update = state["previous_update"]

    def memory(self) -> dict[str, Any]:
        """The rule's own entries of :meth:`state_dict`."""
        return {}


RULES: dict[str, type[Rule]] = {}


def register(rule: type[Rule]) -> type[Rule]:
    """Make ``rule`` available under its name (a class decorator)."""
    RULES[rule.name] = rule
    return rule


def get_rule(name: str) -> type[Rule]:
    try:
        return RULES[name]
    except KeyError:
        raise ValueError(f"aggregation rule {name!r}: allowed {', '.join(RULES)}") from None


@register
class Full(Rule):
    """Average the full gradients that arrived; lost devices are dropped."""

    name = "full"

    def contributions(self, payload, delivery):
        return self.weights(delivery.sign_ok), payload.gradients


@register
class Stale(Rule):
    """As ``full``, but a lost device's last received gradient stands in for it."""

    name = "stale"

    def __init__(self, alpha, **settings):
        super().__init__(alpha, **settings)
        self.stale: torch.Tensor | None = None  # the last received gradient per device
        self.has_stale = np.zeros(self.num_devices, dtype=bool)

    def other_vectors(self, uploads):
        return self.stale

    def descent_states(self):
        states = super().descent_states()
        states[:, 0] = np.where(self.has_stale, OTHER, NOTHING)
        return states

    def contributions(self, payload, delivery):
        received = payload.gradients
        if self.stale is None:
            self.stale = torch.zeros_like(received)
        for k in np.flatnonzero(delivery.sign_ok):
            self.stale[k].copy_(received[k])
        self.has_stale |= delivery.sign_ok
        return self.weights(self.has_stale), self.stale

    def memory(self):
        return {"stale": self.stale, "has_stale": self.has_stale.copy()}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.stale = state["stale"]
        self.has_stale = np.asarray(state["has_stale"], dtype=bool)


@register
class NoReuse(Rule):
    """Sign and modulus packets, but only full gradients count: a sign without its modulus is dropped."""

    name = "no_reuse"
    sign_only_counts = False
    outcomes = (NOTHING, NOTHING, FULL)

    def packet_worths(self, uploads, learning_rate, smoothness):
        _, full = super().packet_worths(uploads, learning_rate, smoothness)
        return np.zeros_like(full), full

    def contributions(self, payload, delivery):
        return self.weights(delivery.both_ok), payload.gradients


@register
class SignReuse(Rule):
    """SP-FL: both packets -> g_k; only the sign -> s_k * c, c the compensatory modulus; sign lost ->
    dropped.  c is the received devices' mean magnitude (``received_mean``, kept until a modulus arrives
    again), |previous update| (``previous_update``), or each device's own ||g_k||_1 / d sent with its
    signs (``scalar``).  Before any c exists a device's signs are scaled by its own ||g_k|| / sqrt(d),
    reported on the control channel."""

    name = "sign_reuse"
    reported_vectors = 2
    outcomes = (NOTHING, OTHER, FULL)

    def __init__(self, alpha, **settings):
        super().__init__(alpha, **settings)
        self.modulus: torch.Tensor | None = None  # c under received_mean

    def packet_worths(self, uploads, learning_rate, smoothness):
        squared = kernels.squared_norms(uploads, self.workspace)
        inner, c_squared = self.sign_importance_terms(uploads, squared)
        return packet_worth(squared.cpu().numpy(), inner, c_squared, learning_rate, smoothness)

    def sign_importance_terms(self, uploads: torch.Tensor, squared: torch.Tensor | None = None
                              ) -> tuple[np.ndarray, np.ndarray]:
        """Per device <|g_k|, c> and ||c||^2 of the sign scale c known before the round (``squared``:
        the float64 ||g_k||^2, when already at hand)."""
        if self.compensation == "scalar":
            return own_scale_terms(uploads, self.workspace)
        c = self.current_modulus()
        if c is not None:
            inner = kernels.abs_dot(uploads, c, self.workspace).cpu().numpy()
            return inner, np.full(uploads.shape[0], float(c.double().square().sum()))
        l1 = kernels.abs_sums(uploads, self.workspace)
        norm = (kernels.squared_norms(uploads, self.workspace) if squared is None else squared).sqrt()
        return (l1 * norm / uploads.shape[1] ** 0.5).cpu().numpy(), norm.square().cpu().numpy()

    def other_vectors(self, uploads):
        return signs(uploads) * self.sign_scale(uploads)

    def current_modulus(self) -> torch.Tensor | None:
        """c before this round's packets: the received mean, or |previous update|; None when none yet."""
        if self.compensation == "previous_update":
            return None if self.previous_update is None else self.previous_update.abs()
        return self.modulus

    def sign_scale(self, uploads: torch.Tensor) -> torch.Tensor:
        """What multiplies a sign-only device's signs: c (d entries), or per device (K x 1) its own
        ||g_k||_1 / d (``scalar``) or, with no c yet, its own ||g_k|| / sqrt(d)."""
        if self.compensation == "scalar":
            return kernels.abs_means(uploads, self.workspace)
        c = self.current_modulus()
        if c is None:
            return uploads.norm(dim=1, keepdim=True) / uploads.shape[1] ** 0.5
        return c

    def contributions(self, payload, delivery):
        received, both = payload.gradients, delivery.both_ok
        if self.compensation == "received_mean" and both.any():
            w = torch.as_tensor(self.alpha[both] / self.alpha[both].sum(), dtype=received.dtype,
                                device=received.device)
            self.modulus = w @ kernels.rows_at(received, both, self.workspace).abs_()
        sign_only = delivery.sign_ok & ~both
        if not sign_only.any():
            return self.weights(both), received
        scale = self.sign_scale(payload.uploads)
        rows = kernels.rows_written(  # g_k, and s_k * c for the sign-only devices
            received, np.flatnonzero(sign_only),
            lambda k, row: payload.scaled_signs(k, scale if scale.dim() == 1 else scale[k], out=row),
            self.workspace, base=received)
        return self.weights(delivery.sign_ok), rows

    def memory(self):
        return {"modulus": self.modulus}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.modulus = state["modulus"]


@register
class Signs(Rule):
    """signSGD: each device's signs times its own ||g_k||_1 / d, averaged (``mean``), or their weighted
    majority vote scaled by the weighted mean scale (``majority``)."""

    name = "signs"
    reported_vectors = 2
    outcomes = (NOTHING, OTHER, OTHER)

    def packet_worths(self, uploads, learning_rate, smoothness):
        inner, c_squared = own_scale_terms(uploads, self.workspace)
        sign = packet_worth(np.zeros_like(inner), inner, c_squared, learning_rate, smoothness)[0]
        return sign, sign

    def other_vectors(self, uploads):
        return signs(uploads) * uploads.abs().mean(dim=1, keepdim=True)

    def contributions(self, payload, delivery):
        scale = payload.scales(self.workspace)
        rows = kernels.rows_written(payload.uploads, range(self.num_devices),
                                    lambda k, row: payload.scaled_signs(k, scale[k], out=row), self.workspace)
        return self.weights(delivery.sign_ok), rows

    def combine(self, payload, delivery):
        """The mean is w @ X of :meth:`contributions`; the weighted majority vote is not of that form."""
        if self.signsgd_aggregation != "majority":
            return super().combine(payload, delivery)
        weights = self.weights(delivery.sign_ok)
        if weights is None:
            return None
        uploads = payload.uploads
        w = torch.as_tensor(weights, dtype=uploads.dtype, device=uploads.device)
        scale = w @ payload.scales(self.workspace)[:, 0]
        votes = kernels.rows_written(uploads, range(self.num_devices), lambda k, row: row.copy_(payload.signs(k)),
                                     self.workspace)
        return signs(w @ votes) * scale


def own_scale_terms(uploads: torch.Tensor, workspace: kernels.Workspace) -> tuple[np.ndarray, np.ndarray]:
    """Per device <|g_k|, c_k> and ||c_k||^2 for the scale c_k = ||g_k||_1 / d in every entry (a 32-bit
    scale sent with the signs)."""
    l1 = kernels.abs_sums(uploads, workspace).cpu().numpy()
    per_entry = l1 / uploads.shape[1]
    return l1 * per_entry, per_entry**2 * uploads.shape[1]
