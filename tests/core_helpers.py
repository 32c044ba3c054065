"""Independent references and small builders shared by several test files.

The references are written differently from src/spfl on purpose: gradients by module forward/backward one
device at a time, random streams rebuilt from the seed as docs/model.md states them, the channel from its
formulas in plain Python floats.  A test module imports these helpers, never another test module.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy.integrate import quad

from spfl.configuration.settings import SpecError
from spfl.simulator.lifecycle import Callback, RoundView
from spfl.simulator.transmission import Delivery

# docs/model.md section 1: one seed spawns, in this order, the partition, init, geometry, fading and
# batch streams; the batch stream spawns one child per device.
STREAM_ORDER = ("partition", "init", "geometry", "fading", "batches")


def seed_stream(seed: int, name: str) -> np.random.SeedSequence:
    return np.random.SeedSequence(seed).spawn(len(STREAM_ORDER))[STREAM_ORDER.index(name)]


def batch_generators(seed: int, num_devices: int) -> list[np.random.Generator]:
    return [np.random.default_rng(s) for s in seed_stream(seed, "batches").spawn(num_devices)]


def fading_generator(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed_stream(seed, "fading"))


def textbook_gradients(env, weights: torch.Tensor, generators: list[np.random.Generator]) -> torch.Tensor:
    """One mini-batch gradient per device (K, d), each by the module's own forward and backward pass."""
    spec, module = env.spec, env.model.module
    torch.nn.utils.vector_to_parameters(weights.clone(), module.parameters())
    rows = []
    for part, rng in zip(env.parts, generators):
        pick = part[np.sort(rng.choice(len(part), size=min(spec.batch_size, len(part)), replace=False))]
        index = torch.from_numpy(pick)
        module.zero_grad()
        loss = torch.nn.functional.cross_entropy(module(env.dataset.train_x[index]), env.dataset.train_y[index])
        loss.backward()
        rows.append(torch.nn.utils.parameters_to_vector(p.grad for p in module.parameters()).detach().clone())
    return torch.stack(rows)


def partition_weights(env) -> np.ndarray:
    """alpha_k = n_k / n from the partition's sizes (not from the environment's alpha)."""
    sizes = [len(part) for part in env.parts]
    return np.array([n / sum(sizes) for n in sizes])


def dbm_to_watt(dbm: float) -> float:
    return 10 ** (dbm / 10) / 1000


def gain_at(distance_m: float) -> float:
    """Large-scale gain of 128.1 + 37.6 log10(d / km) dB path loss."""
    return 10 ** (-(128.1 + 37.6 * math.log10(distance_m / 1000)) / 10)


def outage_threshold(bandwidth: float, power: float, gain: float, bits: float, slot: float,
                     noise_psd: float) -> float:
    """|h|^2 below which a packet fails: B N0 (2^(D / (B S)) - 1) / (p lambda); inf when nothing is sent."""
    if bandwidth <= 0 or power <= 0 or slot <= 0:
        return math.inf
    exponent = bits / (bandwidth * slot)
    if exponent > 1000:
        return math.inf
    return bandwidth * noise_psd * (2 ** exponent - 1) / (power * gain)


def quantized(magnitudes: list[float], bits: int) -> list[float]:
    """The uniform b-bit quantizer of one device's magnitudes, its maximum sent as the range."""
    top = max(magnitudes)
    levels = 2**bits - 1
    return [round(m / top * levels) / levels * top for m in magnitudes]


def cell_averaged_outage(deadline_s, bits, share, bandwidth, power, noise_psd, inner, outer) -> float:
    """Packet error averaged over a device placed uniformly by area in the annulus [inner, outer]: the
    integral of 1 - exp(-theta(r)) with density 2 r / (outer^2 - inner^2), by quadrature (no sampling)."""
    slot = share * deadline_s

    def error_at(r):
        theta = bandwidth * noise_psd * math.expm1(bits / (bandwidth * slot) * math.log(2)) / (power * gain_at(r))
        return -math.expm1(-theta) * 2 * r / (outer**2 - inner**2)

    value, _ = quad(error_at, inner, outer, limit=200, epsabs=1e-10)
    return value


# --- small builders shared by several test files -----------------------------------------------------

# Four devices at 0.8 MHz with the sign packet on half the deadline: signs mostly arrive, moduli sometimes;
# two local steps, so that the learning rate reaches the trainer.
TWO_STEP_RUN = dict(num_devices=4, batch_size=8, rounds=3, eval_every=1, learning_rate=0.1, local_steps=2,
                    total_bandwidth_mhz=0.8, deadline_ms=100.0, slot_share=0.5, partition="dirichlet")


def tensor(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


def delivery(sign_ok, modulus_ok) -> Delivery:
    """Every device sent both packets; these arrived (booleans or 0/1 per device)."""
    sign_ok, modulus_ok = np.array(sign_ok, bool), np.array(modulus_ok, bool)
    zeros = np.zeros(len(sign_ok))
    sent = np.ones(len(sign_ok), bool)
    return Delivery(sent, sent, sign_ok, modulus_ok, zeros, zeros, 0.0)


def refused(function, *args, **kwargs) -> str:
    """The message of the SpecError that the call raises, checked to be one line."""
    with pytest.raises(SpecError) as error:
        function(*args, **kwargs)
    message = str(error.value)
    assert "\n" not in message
    return message


def round_view(round_index: int, row=None, status: str = "ok", outcome=None, snapshot=dict,
               rounds: int = 10) -> RoundView:
    """What a lifecycle hook sees of round ``round_index`` of a 10-round spfl run (a stand-in spec)."""
    spec = SimpleNamespace(method="spfl", rounds=rounds, run_hash="h")
    return RoundView(spec, round_index, row or {}, None, status, snapshot, outcome)


class Recorder(Callback):
    """Every hook call, with what the round's row held when the hook saw it."""

    def __init__(self):
        self.calls = []

    def begin(self, view):
        self.calls.append(("begin", view.round, dict(view.row)))

    def after_round(self, view):
        self.calls.append(("after_round", view.round, dict(view.row)))

    def end(self, run):
        self.calls.append(("end", run.rounds_completed, [dict(r) for r in run.metric_rows]))


def method_files(folder) -> dict[str, bytes]:
    """Every record of a cell but the wall times."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != "timing.json"}
