"""An SP-FL round written the common way, as the yardstick for ``spfl``'s simulator (bench only).

This is how most FL simulators are written: a deep-copied model and optimizer per device, a Python
loop of ``zero_grad / forward / backward / step``, each device's update read back from its
``state_dict``, per-device quantities computed key by key, and the global model formed by a weighted
state-dict average.  It does the same work per round as ``spfl``'s ``Simulation.step`` for method
``spfl`` on the same environment (data split, batch size, initial weights, cell): the importance
terms of every device (||g||^2 and <|g|, c>, or the device's own ||g|| / sqrt(d) before any modulus
arrived), the same allocation solver (``spfl.simulator.allocation``) and packet layout, sign and modulus packets
through Rayleigh fading (``spfl.simulator.transmission.Link``), sign-only devices rebuilt with the received-mean
compensatory modulus, lost signs dropped.  The radio side (solver, thresholds) is spfl's own: what
differs is how the learning side is written.  So a speed difference is how the round is written, not
what it computes.  (It skips the per-round metrics row, which is cheap.)

Never imported by ``spfl``; only ``bench_round.py`` uses it.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch.nn import functional as F

from spfl.simulator.allocation import AllocationProblem, allocate
from spfl.simulator.allocation.objective import packet_worth
from spfl.simulator.channel import dbm_to_watt, draw_fading
from spfl.simulator.transmission import Link, Resources, get_scheme


class ReferenceSimulator:
    """SP-FL rounds over an ``spfl.simulator.simulation.Environment``, one deep copy per device."""

    def __init__(self, env, seed: int = 0):
        spec = env.spec
        self.env, self.spec = env, spec
        self.global_model = copy.deepcopy(env.model.module)
        torch.nn.utils.vector_to_parameters(env.initial_weights.clone(), self.global_model.parameters())
        self.rng = np.random.default_rng(seed)
        self.modulus: dict[str, torch.Tensor] | None = None  # last compensatory modulus, per key
        self.layout = get_scheme("sign_modulus").layout(env.num_params, spec.modulus_bits, spec.compensation,
                                                        spec.deadline_ms / 1000.0)
        self.link = Link(env.geometry.gain, dbm_to_watt(spec.noise_psd_dbm_hz), spec.per_model, spec.waterfall_m,
                         spec.fading)

    def round(self) -> None:
        spec, data = self.spec, self.env.dataset
        lr = spec.learning_rate
        global_state = copy.deepcopy(self.global_model.state_dict())
        updates = []
        for part in self.env.parts:
            local = copy.deepcopy(self.global_model)
            optimizer = torch.optim.SGD(local.parameters(), lr=lr)
            pick = part[np.sort(self.rng.choice(len(part), size=min(spec.batch_size, len(part)), replace=False))]
            index = torch.from_numpy(pick).to(data.train_x.device)
            optimizer.zero_grad()
            F.cross_entropy(local(data.train_x[index]), data.train_y[index]).backward()
            optimizer.step()
            local_state = local.state_dict()
            updates.append({key: (global_state[key] - local_state[key]) / lr for key in global_state})
        sign_ok, both_ok = self.transmit(updates)
        self.aggregate(global_state, updates, sign_ok, both_ok)

    def transmit(self, updates: list[dict[str, torch.Tensor]]) -> tuple[np.ndarray, np.ndarray]:
        """Importance per device, the SP-FL allocation, and which packets survive the fading."""
        spec, d = self.spec, self.env.num_params
        squared = np.array([sum(float(v.double().pow(2).sum()) for v in u.values()) for u in updates])
        if self.modulus is None:  # each device's own ||g|| / sqrt(d) as its modulus
            l1 = np.array([sum(float(v.double().abs().sum()) for v in u.values()) for u in updates])
            inner, c_squared = l1 * np.sqrt(squared) / d**0.5, squared
        else:
            inner = np.array([sum(float((u[key].abs().double() * self.modulus[key].double()).sum()) for key in u)
                              for u in updates])
            c_squared = sum(float(c.double().pow(2).sum()) for c in self.modulus.values())
        u_sign, u_modulus = packet_worth(squared, inner, c_squared, spec.learning_rate, spec.smoothness)
        problem = AllocationProblem(
            alpha=self.env.alpha, gain=self.link.gain, u_sign=u_sign, u_modulus=u_modulus,
            total_bandwidth=spec.total_bandwidth_mhz * 1e6, max_power=dbm_to_watt(spec.max_power_dbm),
            noise_psd=self.link.noise_psd, deadline=self.layout.deadline, sign_bits=self.layout.sign_bits,
            modulus_bits=self.layout.modulus_bits, slot_share=self.layout.share_for_setting(spec.slot_share),
            power_constraint=spec.power_constraint, per_model=spec.per_model, waterfall_m=spec.waterfall_m,
            fading=spec.fading, normalize=spec.normalize, sign_only_counts=True)
        allocation = allocate(problem, policy="spfl")
        resources = Resources(allocation.bandwidth, allocation.power_sign, allocation.power_modulus,
                              allocation.slot_share)
        t_sign, t_modulus = self.link.thresholds(self.layout, resources)
        fading = draw_fading(self.rng, len(updates), spec.fading)
        sign_ok = fading[:, 0] >= t_sign
        return sign_ok, sign_ok & (fading[:, 1] >= t_modulus)

    def aggregate(self, global_state, updates, sign_ok: np.ndarray, both_ok: np.ndarray) -> None:
        """Received-mean compensatory modulus, sign reuse, weighted state-dict average, SGD step."""
        alpha, lr = self.env.alpha, self.spec.learning_rate
        own_scale = [(sum(float(v.double().pow(2).sum()) for v in u.values()) / self.env.num_params) ** 0.5
                     for u in updates]  # the compensation before any modulus arrived
        if both_ok.any():
            weights = alpha[both_ok] / alpha[both_ok].sum()
            self.modulus = {key: sum(float(w) * updates[k][key].abs() for w, k in zip(weights, np.flatnonzero(both_ok)))
                            for key in global_state}
        usable = both_ok | sign_ok
        if not usable.any():
            return
        weights = alpha[usable] / (alpha[usable].sum() if self.spec.normalize == "received" else alpha.sum())
        average = {}
        for key in global_state:
            total = torch.zeros_like(global_state[key])
            for w, k in zip(weights, np.flatnonzero(usable)):
                g = updates[k][key]
                if not both_ok[k]:
                    c = self.modulus[key] if self.modulus is not None else own_scale[k]
                    g = torch.where(g >= 0, 1.0, -1.0) * c
                total += float(w) * g
            average[key] = global_state[key] - lr * total
        self.global_model.load_state_dict(average)
