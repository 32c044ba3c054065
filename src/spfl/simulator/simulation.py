"""The federated learning round loop over the wireless uplink (docs/model.md).

``Environment`` holds everything a seed fixes and all methods share (common random numbers):
data split, device positions, initial weights.  A ``Simulation`` runs one method in it; each run
re-creates the per-round random streams (mini-batches, fading) from the same seed, so methods
differ only by what they do, never by luck.  Every round:

    uploads -> importance -> allocation -> packets through fading -> aggregation -> SGD step

Around the rounds, the run's hooks (``spfl.simulator.lifecycle``) evaluate the model, record the
allocation, log, checkpoint and, when the run ends, write its records.

On a GPU ``run_cell`` runs a cell's methods in lockstep (``run_methods``), each on its own CUDA
stream, so the CPU work of one method (allocation, transmission, records) overlaps the GPU work of
the others.  Methods share nothing they change, so the records are those of running the methods one
after another, bit for bit.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spfl import records
from spfl.configuration.methods import Method, get_method
from spfl.configuration.settings import RunSpec
from spfl.simulator import checkpoint as checkpoints
from spfl.simulator import lifecycle
from spfl.simulator.aggregation import Rule, get_rule
from spfl.simulator.allocation import Allocation, AllocationProblem, allocate
from spfl.simulator.channel import Geometry, dbm_to_watt, draw_fading
from spfl.simulator.data import Dataset, load_dataset, load_prepared
from spfl.simulator.gram import CountSketch, control_bits, gram_matrix
from spfl.simulator.lifecycle import AllocationRecord, Callback, Checkpoints, Evaluation, ProgressLog, RunRecords
from spfl.simulator.models import build_model
from spfl.simulator.partition import histogram_rows, label_histogram, partition
from spfl.simulator.training import FlatModel, LocalTrainer, all_finite
from spfl.simulator.transmission import Delivery, Link, Resources, get_scheme

log = logging.getLogger("spfl")

# Independent random streams, one per concern, all children of the run's seed.
STREAMS = ("partition", "init", "geometry", "fading", "batches", "sketch")


def streams(seed: int) -> dict[str, np.random.SeedSequence]:
    return dict(zip(STREAMS, np.random.SeedSequence(seed).spawn(len(STREAMS))))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("run setting 'device' = 'cuda' is invalid here: no CUDA device; allowed cpu or auto")
    return torch.device(name)


@dataclass
class Environment:
    """What one seed fixes for every method: data, split, cell geometry and initial model."""

    spec: RunSpec
    dataset: Dataset
    parts: list[np.ndarray]
    alpha: np.ndarray
    geometry: Geometry
    model: FlatModel
    initial_weights: torch.Tensor
    device: torch.device

    @property
    def num_params(self) -> int:
        return self.model.num_params


def build_environment(spec: RunSpec, dataset: Dataset | None = None) -> Environment:
    """Load (or take) the data and draw everything the seed fixes.  ``dataset`` lets benchmarks
    and tests bring their own tensors instead of the spec's dataset."""
    device = resolve_device(spec.device)
    if dataset is None:
        dataset = load_prepared(spec.data_file, spec.dataset) if spec.data_file else load_dataset(
            spec.dataset, spec.data_dir, download=spec.download)
    seeds = streams(spec.seed)
    parts = partition(dataset.train_y.numpy(), spec.num_devices, spec.partition,
                      np.random.default_rng(seeds["partition"]), beta=spec.dirichlet_beta,
                      min_size=spec.min_samples_per_device, shards_per_device=spec.shards_per_device)
    sizes = np.array([len(p) for p in parts], dtype=float)
    geometry = Geometry.drop(spec.num_devices, spec.cell_inner_radius_m, spec.cell_outer_radius_m,
                     np.random.default_rng(seeds["geometry"]))
    generator = torch.Generator().manual_seed(int(seeds["init"].generate_state(1, np.uint64)[0] >> 1))
    module = build_model(spec.resolved_model, dataset.input_shape, dataset.num_classes, generator=generator).to(device)
    model = FlatModel.wrap(module)
    on_device = Dataset(dataset.name, dataset.train_x.to(device), dataset.train_y.to(device),
                        dataset.test_x.to(device), dataset.test_y.to(device), dataset.num_classes)
    return Environment(spec, on_device, parts, sizes / sizes.sum(), geometry, model,
                       model.initial_vector(), device)


@dataclass
class RunState:
    """Everything that changes during a run: enough to checkpoint and resume bit-exactly."""

    round: int
    weights: torch.Tensor
    momentum: torch.Tensor | None
    fading_rng: np.random.Generator
    batch_rngs: list[np.random.Generator]
    aggregator: Rule
    metric_rows: list[dict[str, Any]] = field(default_factory=list)
    allocation_rows: list[dict[str, Any]] = field(default_factory=list)
    trace_rows: list[dict[str, Any]] = field(default_factory=list)
    status: str = records.OK
    diverged_round: int | None = None

    def to_checkpoint(self) -> dict[str, Any]:
        return {
            "round": self.round, "weights": self.weights, "momentum": self.momentum,
            "fading_rng": self.fading_rng.bit_generator.state,
            "batch_rngs": [g.bit_generator.state for g in self.batch_rngs],
            "aggregator": self.aggregator.state_dict(), "metric_rows": self.metric_rows,
            "allocation_rows": self.allocation_rows, "trace_rows": self.trace_rows,
        }

    def restore(self, saved: dict[str, Any]) -> None:
        self.round = saved["round"]
        self.weights = saved["weights"]
        self.momentum = saved["momentum"]
        self.fading_rng.bit_generator.state = saved["fading_rng"]
        for rng, state in zip(self.batch_rngs, saved["batch_rngs"]):
            rng.bit_generator.state = state
        self.aggregator.load_state_dict(saved["aggregator"])
        self.metric_rows = saved["metric_rows"]
        self.allocation_rows = saved["allocation_rows"]
        self.trace_rows = saved["trace_rows"]


@dataclass
class RoundOutcome:
    """What one round did, for the run's callbacks (spfl.simulator.lifecycle).  The round's metrics row is
    already in the state's ``metric_rows``."""

    round: int
    train_loss: float
    sent: bool = True  # False: the run diverged before anything was sent
    resources: Resources | None = None
    delivery: Delivery | None = None
    allocation: Allocation | None = None  # None where nothing was allocated
    problem: AllocationProblem | None = None
    update: torch.Tensor | None = field(default=None, repr=False)

    @property
    def abnormal(self) -> bool:
        """A round whose model must be looked at whatever the schedule: non-finite loss, or diverged
        before sending."""
        return not self.sent or not math.isfinite(self.train_loss)


class Simulation:
    """One method run in an environment."""

    def __init__(self, env: Environment, method: Method | str, batched: bool | None = None):
        self.env = env
        self.spec = env.spec.with_method(method if isinstance(method, str) else method.name)
        self.method = get_method(self.spec.method)
        spec = self.spec
        self.scheme = get_scheme(self.method.scheme)
        self.rule = get_rule(self.method.aggregation)
        self.layout = self.scheme.layout(env.num_params, spec.modulus_bits, spec.compensation,
                                         spec.deadline_ms / 1000.0)
        self.link = Link(env.geometry.gain, dbm_to_watt(spec.noise_psd_dbm_hz), spec.per_model, spec.waterfall_m,
                         spec.fading)
        self.total_bandwidth = spec.total_bandwidth_mhz * 1e6
        self.max_power = dbm_to_watt(spec.max_power_dbm)
        self.sketched = spec.surrogate == "descent" and spec.gram == "sketch"
        self._sketch: CountSketch | None = None
        # What the allocator's knowledge costs on the control channel each round (0 when nothing is optimized).
        informed = self.method.policy not in ("uniform", "none") and not self.scheme.error_free
        self.control_bits = (control_bits(spec.num_devices, self.rule.reported_vectors,
                                          spec.sketch_size if self.sketched else None) if informed else 0)
        batched = env.device.type == "cuda" if batched is None else batched
        self.trainer = LocalTrainer(env.model, spec.learning_rate, spec.local_steps, batched=batched,
                                    precision=spec.precision)

    # -- state -------------------------------------------------------------------------------------
    def initial_state(self) -> RunState:
        seeds = streams(self.spec.seed)
        aggregator = self.rule(self.env.alpha, compensation=self.spec.compensation, normalize=self.spec.normalize,
                               signsgd_aggregation=self.spec.signsgd_aggregation)
        return RunState(
            round=0, weights=self.env.initial_weights.clone(), momentum=None,
            fading_rng=np.random.default_rng(seeds["fading"]),
            batch_rngs=[np.random.default_rng(s) for s in seeds["batches"].spawn(self.spec.num_devices)],
            aggregator=aggregator)

    # -- one round ---------------------------------------------------------------------------------
    def launch_round(self, state: RunState) -> LaunchedRound:
        """The first half of a round: draw the batches and the fading, queue the local training."""
        batches = self.draw_batches(state)
        fading = draw_fading(state.fading_rng, self.spec.num_devices, self.spec.fading)
        uploads, losses = self.trainer.launch(state.weights, batches)
        return LaunchedRound(fading, uploads, losses)

    def draw_batches(self, state: RunState) -> list[list[tuple[torch.Tensor, torch.Tensor]]]:
        """Each device's mini-batches for the round's local steps, from its own random stream.  The
        indices of all devices go to the data's device at once and are gathered in one operation, so
        a GPU run pays one transfer per round, not one per device and step."""
        picks = []
        for part, rng in zip(self.env.parts, state.batch_rngs):
            for _ in range(self.spec.local_steps):
                pick = rng.choice(len(part), size=min(self.spec.batch_size, len(part)), replace=False)
                picks.append(part[np.sort(pick)])
        data = self.env.dataset
        index = torch.from_numpy(np.concatenate(picks)).to(self.env.device)
        inputs, labels = data.train_x[index], data.train_y[index]
        bounds = np.cumsum([0] + [len(p) for p in picks])
        steps = [(inputs[a:b], labels[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
        return [steps[k * self.spec.local_steps:(k + 1) * self.spec.local_steps] for k in range(self.spec.num_devices)]

    def allocation_problem(self, uploads: torch.Tensor, aggregator: Rule) -> AllocationProblem:
        """This round's allocation problem: every packet's worth under the method's aggregation rule
        (reported on the control channel before allocation) and the round's budgets."""
        spec = self.spec
        u_sign, u_modulus = aggregator.packet_worths(uploads, spec.learning_rate, spec.smoothness)
        descent = None
        if spec.surrogate == "descent":
            gram = gram_matrix(uploads, aggregator.other_vectors(uploads), self.sketch(uploads))
            descent = aggregator.descent_terms(gram, spec.learning_rate, spec.smoothness)
        return AllocationProblem(
            alpha=self.env.alpha, gain=self.link.gain, u_sign=u_sign, u_modulus=u_modulus,
            total_bandwidth=self.total_bandwidth, max_power=self.max_power, noise_psd=self.link.noise_psd,
            deadline=self.layout.deadline, sign_bits=self.layout.sign_bits, modulus_bits=self.layout.modulus_bits,
            slot_share=self.layout.share_for_setting(spec.slot_share), power_constraint=spec.power_constraint,
            per_model=spec.per_model, waterfall_m=spec.waterfall_m, fading=spec.fading,
            normalize=spec.normalize, sign_only_counts=aggregator.sign_only_counts, descent=descent)

    def sketch(self, uploads: torch.Tensor) -> CountSketch | None:
        """The run's CountSketch (one seeded hash for every round and method of a seed), or None when the
        allocator is given exact inner products or uses the Jensen surrogate."""
        if not self.sketched:
            return None
        if self._sketch is None or self._sketch.dim != uploads.shape[1]:
            self._sketch = CountSketch(uploads.shape[1], self.spec.sketch_size, streams(self.spec.seed)["sketch"],
                                       uploads.device)
        return self._sketch

    def resources(self, uploads: torch.Tensor, state: RunState) -> tuple[Resources, Allocation | None,
                                                                          AllocationProblem | None]:
        """Bandwidth, powers and sign shares per device, with the allocation that chose them."""
        if self.scheme.error_free:  # nothing to allocate: every packet arrives
            num = self.spec.num_devices
            return Resources(np.full(num, self.total_bandwidth / num), np.full(num, self.max_power),
                             np.zeros(num), np.ones(num)), None, None
        problem = self.allocation_problem(uploads, state.aggregator)
        allocation = allocate(problem, policy=self.method.policy)
        return (Resources(allocation.bandwidth, allocation.power_sign, allocation.power_modulus,
                          allocation.slot_share), allocation, problem)

    def step(self, state: RunState) -> RoundOutcome:
        """One round's algorithm: train, allocate, transmit, aggregate, update.  Appends the round's
        metrics row; evaluation and the other bookkeeping are callbacks (``spfl.simulator.lifecycle``)."""
        return self.finish_round(state, self.launch_round(state))

    def finish_round(self, state: RunState, launched: LaunchedRound) -> RoundOutcome:
        """The second half of :meth:`step`: wait for the local training, then allocate, transmit,
        aggregate, update."""
        spec, env = self.spec, self.env
        uploads, fading = launched.uploads, launched.fading
        losses = launched.losses.double().cpu().numpy()
        train_loss = float(np.dot(env.alpha, losses))
        if not (np.isfinite(losses).all() and all_finite(uploads)):
            # Diverged before anything is sent: a non-finite upload has no importance to allocate by.
            state.round += 1
            state.status, state.diverged_round = records.DIVERGED, state.round
            state.metric_rows.append({"round": state.round, "train_loss": train_loss})
            return RoundOutcome(state.round, train_loss, sent=False)
        resources, allocation, problem = self.resources(uploads, state)
        delivery = self.scheme.transmit(self.layout, resources, self.link, fading)
        update = state.aggregator.aggregate(self.scheme.decode(uploads, spec.modulus_bits), delivery)
        state.round += 1
        if update is not None:
            if spec.server_momentum > 0:
                state.momentum = update if state.momentum is None else spec.server_momentum * state.momentum + update
                update = state.momentum
            state.weights = state.weights - spec.learning_rate * update
        state.metric_rows.append(self.round_row(state.round, train_loss, delivery, allocation, update))
        if not (math.isfinite(train_loss) and all_finite(state.weights)):
            state.status, state.diverged_round = records.DIVERGED, state.round
        return RoundOutcome(state.round, train_loss, True, resources, delivery, allocation, problem, update)

    def round_row(self, round_index: int, train_loss: float, delivery: Delivery, allocation,
                  update: torch.Tensor | None) -> dict[str, Any]:
        sent_s, sent_m = delivery.sent_sign, delivery.sent_modulus
        return {
            "round": round_index,
            "train_loss": train_loss,
            "sign_error_rate": _fraction(~delivery.sign_ok & sent_s, sent_s),
            "modulus_error_rate": _fraction(~delivery.modulus_ok & sent_m, sent_m),
            "devices_transmitting": int(sent_s.sum()),
            "devices_sign_received": int(delivery.sign_ok.sum()),
            "devices_both_received": int(delivery.both_ok.sum()),
            "uplink_bits": delivery.uplink_bits,
            "control_bits": 0 if allocation is None else self.control_bits,
            "objective": None if allocation is None else float(allocation.objective),
            "expected_sign_error": float(delivery.q_sign[sent_s].mean()) if sent_s.any() else None,
            "expected_modulus_error": float(delivery.q_modulus[sent_m].mean()) if sent_m.any() else None,
            "update_norm": 0.0 if update is None else float(update.double().norm()),
        }

    # -- the whole run -----------------------------------------------------------------------------
    def callbacks(self, checkpoint: Path | None = None, out: Path | None = None) -> list[Callback]:
        """The default bookkeeping, in order: evaluate, record the allocation, log; with ``out``, write the
        records there when the run ends; with ``checkpoint``, save the state there every checkpoint_every rounds."""
        schedule = records.evaluation_schedule(self.spec.rounds, self.spec.eval_every)
        test = self.env.dataset
        kept = [Evaluation(self.env.model, test.test_x, test.test_y, schedule), AllocationRecord(schedule),
                ProgressLog()]
        if out is not None:
            kept.append(RunRecords(out))
        if checkpoint is not None:
            kept.append(Checkpoints(checkpoint, self.spec.checkpoint_every))
        return kept

    def begin(self, checkpoint: Path | None, callbacks: list[Callback]) -> RunState:
        """The state to start from: a matching checkpoint's, or the initial one, whose round 0 (the initial
        model) goes through the callbacks' ``begin``."""
        state = (self.initial_state() if checkpoint is None else checkpoints.resume(
            checkpoint, self.spec.run_hash, self.initial_state, self.env.device, label=self.spec.method))
        if state.round == 0:
            lifecycle.begin(self.spec, state, callbacks)
        return state

    def advance(self, state: RunState, callbacks: list[Callback], launched: LaunchedRound | None = None
                ) -> RoundOutcome:
        """One round (or the rest of an already ``launched`` one) and the callbacks' ``after_round``."""
        outcome = self.finish_round(state, self.launch_round(state) if launched is None else launched)
        lifecycle.after_round(self.spec, state, outcome, callbacks)
        return outcome

    def running(self, state: RunState) -> bool:
        return state.round < self.spec.rounds and state.status == records.OK

    def end(self, state: RunState, callbacks: list[Callback], wall_time: float) -> lifecycle.RunEnd:
        """The callbacks' ``end`` (the records writer's among them) on the final state."""
        return lifecycle.end(self.spec, state, callbacks, self.env.num_params, wall_time)

    def train(self, checkpoint: Path | None = None, callbacks: list[Callback] | None = None) -> RunState:
        """The round loop from the start or a matching checkpoint, through every hook; returns the final
        state.  ``callbacks`` replaces the default bookkeeping (``callbacks(checkpoint)``)."""
        started = time.perf_counter()
        callbacks = self.callbacks(checkpoint) if callbacks is None else callbacks
        state = self.begin(checkpoint, callbacks)
        while self.running(state):
            self.advance(state, callbacks)
        self.end(state, callbacks, time.perf_counter() - started)
        return state


def run_cell(spec: RunSpec, methods: list[str], out_dir: str | Path, overlap: bool | None = None,
             env: Environment | None = None) -> dict[str, dict[str, Any]]:
    """Run several methods on one seed's environment (:func:`run_methods`: in lockstep on a GPU); write the
    shared and per-method records.  ``env``: the spec's environment, already built."""
    methods = [get_method(m).name for m in methods]
    out = Path(out_dir)
    env = build_environment(spec) if env is None else env
    log.info("environment: %s, %d devices, %d parameters, device %s", spec.dataset, spec.num_devices,
             env.num_params, env.device)
    hist = label_histogram(env.dataset.train_y.cpu().numpy(), env.parts, env.dataset.num_classes)
    records.write_csv(out / records.PARTITION_CSV, records.PARTITION_COLUMNS,
                      (dict(zip(records.PARTITION_COLUMNS, row)) for row in histogram_rows(hist)))
    records.write_csv(out / records.DEVICES_CSV, records.DEVICE_COLUMNS,
                      ({"device": k, "distance_m": float(env.geometry.distance[k]),
                        "gain": float(env.geometry.gain[k]),
                        "num_samples": len(env.parts[k]), "alpha": float(env.alpha[k])}
                       for k in range(spec.num_devices)))
    return run_methods([Simulation(env, m) for m in methods], [out / m for m in methods], overlap)


@dataclass
class LaunchedRound:
    """A round whose local training is queued (on a GPU, possibly still running)."""

    fading: np.ndarray
    uploads: torch.Tensor
    losses: torch.Tensor


class _Member:
    """One method's run inside :func:`run_methods`: its state, bookkeeping, CUDA stream and time."""

    def __init__(self, sim: Simulation, out: Path):
        self.sim, self.checkpoint = sim, out / records.CHECKPOINT
        cuda = sim.env.device.type == "cuda"
        self.stream = torch.cuda.Stream(sim.env.device) if cuda else None
        self.seconds = 0.0
        with self.turn():
            self.callbacks = sim.callbacks(self.checkpoint, out)
            self.state = sim.begin(self.checkpoint, self.callbacks)

    @contextlib.contextmanager
    def turn(self):
        """Work on this method's stream; the time is charged to it."""
        started = time.perf_counter()
        with torch.cuda.stream(self.stream) if self.stream is not None else contextlib.nullcontext():
            yield
        self.seconds += time.perf_counter() - started

    def finish(self) -> dict[str, Any]:
        """The end hooks, the records writer's among them; then the checkpoint, superseded, goes."""
        run = self.sim.end(self.state, self.callbacks, self.seconds)
        self.checkpoint.unlink(missing_ok=True)
        return asdict(run.summary)


def run_methods(sims: list[Simulation], outs: list[Path], overlap: bool | None = None) -> dict[str, dict[str, Any]]:
    """Run simulations of one environment, each resuming from a matching checkpoint in its output folder,
    and write each one's records when it ends.  The records do not depend on ``overlap``:

    - on (default on a GPU): in lockstep, a round of every method at a time, each method on its own CUDA
      stream; every method's local training is queued before any method's round is finished, so one
      method's CPU work (allocation, transmission, records) runs while the GPU trains the others.  Each
      method's buffers stay allocated until the cell ends (on the paper's CIFAR model, about 1 GB per
      method at K = 100).
    - off (default on a CPU, where nothing overlaps): one method after another, one method's buffers at
      a time.

    A method's ``wall_time_s`` is the time spent in its own turns."""
    device = sims[0].env.device if sims else torch.device("cpu")
    overlap = device.type == "cuda" if overlap is None else overlap
    summaries = {}
    if not overlap:
        for sim, out in zip(sims, outs):
            member = _Member(sim, out)
            while sim.running(member.state):
                with member.turn():
                    sim.advance(member.state, member.callbacks)
            summaries[sim.spec.method] = member.finish()
        return summaries
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # the environment's tensors are written before any stream reads them
    active = [_Member(sim, out) for sim, out in zip(sims, outs)]
    while active:
        running = [m for m in active if m.sim.running(m.state)]
        launched = []
        for member in running:
            with member.turn():
                launched.append(member.sim.launch_round(member.state))
        for member, round_launched in zip(running, launched):
            with member.turn():
                member.sim.advance(member.state, member.callbacks, round_launched)
        for member in active:
            if not member.sim.running(member.state):
                summaries[member.sim.spec.method] = member.finish()
        active = [m for m in active if m.sim.running(m.state)]
    return {sim.spec.method: summaries[sim.spec.method] for sim in sims}


def _fraction(numerator: np.ndarray, denominator: np.ndarray) -> float | None:
    total = int(denominator.sum())
    return None if total == 0 else int(numerator.sum()) / total
