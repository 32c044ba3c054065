"""Allocation policies: SP-FL's hierarchical allocation, its ablations and the baselines.

Every optimized policy maximizes the same Phi (:mod:`.objective`), the expected surrogate of the
aggregate of the method's own aggregation rule:

- ``spfl``: bandwidth across devices (:mod:`.bandwidth`) and, per device, power (and the sign share,
  when ``slot_share`` is optimized) between its packets (:mod:`.power`, :mod:`.packet`);
- ``power``: uniform bandwidth, packet level optimized;  ``bandwidth``: equal packet powers, bandwidth
  optimized;  ``uniform``: equal bandwidth and equal packet powers (nothing optimized);
- ``scheduling``: the whole gradient as one packet at full power to the n devices with the largest
  alpha_k pi_k(B_tot / n) U_m,k, sharing the band equally; n maximizes Phi.

Phi is affine in each device's own arrival probabilities given the others', so its exact per-device
coefficients at a point define a separable problem (:mod:`.separable`) whose answer is a candidate.  Under
``normalize: all`` with the Jensen surrogate that problem is Phi itself (one solve, exact on its grid).
Otherwise the search is a set of *nodes*: SP-FL's, and the answers it must never be below (its ablations,
and with tau optimized the proportional share).  Each node starts from the best of the uniform point and
the answers it depends on, and runs two chains of separable solves re-linearized at its incumbent until
Phi stops rising: one from the point where every packet arrives, one from that start (docs/model.md §7).
The nodes run in lockstep as generators (:func:`_program`), so each round's solves and evaluations are
batched (:mod:`.evaluation`) and a repeated solve comes from a memo; the answer is then polished one
device at a time (:func:`_polish`).  It is never worse than the uniform point; ``trace`` records the
policy's incumbent after each offer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

import spfl.simulator.allocation.level_kernels as level_kernels
import spfl.simulator.allocation.search_kernel as search_kernel
from spfl.simulator.allocation.bandwidth import _ZOOM_STEPS, _ZOOMS
from spfl.simulator.allocation.evaluation import DescentEvaluator, evaluator_for
from spfl.simulator.allocation.objective import (
    QUADRATURE_NODES,
    Allocation,
    arrival_probabilities,
    thresholds,
)
from spfl.simulator.allocation.power import _TAU_LOGITS, _TAU_ZOOM_LEVELS
from spfl.simulator.allocation.problem import AllocationProblem
from spfl.simulator.allocation.separable import EMPTY_GRID, PacketLevel, solve_bandwidth

ALLOCATION_POLICIES = ("spfl", "power", "bandwidth", "uniform", "scheduling")
_DESCENT_ROUNDS = 3    # re-linearizations per chain (descent: two chains)
_RECEIVED_ROUNDS = 3   # (Jensen under ``received``: one chain)
_RELATIVE_GAIN = 1e-9
_POLISH_STEPS = 3      # single-device improvements of the answer (exact: Phi is affine in one device)
_FUSED_DEVICES = 40     # up to this K, Phi is evaluated with the coefficients (one call a round)
_BATCH_ELEMENTS = 1 << 21  # numbers per array when many candidate allocations are evaluated at once


def allocate(problem: AllocationProblem, policy: str = "spfl") -> Allocation:
    """Solve one round's allocation with the named policy (one of ``ALLOCATION_POLICIES``)."""
    if policy not in _POLICIES:
        raise ValueError(f"policy={policy!r}: allowed {ALLOCATION_POLICIES}")
    with np.errstate(divide="ignore", over="ignore", invalid="ignore", under="ignore"):
        return _POLICIES[policy](_Context(problem, policy), policy)


def uniform_point(problem: AllocationProblem) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Equal bandwidth, the fixed (or proportional) sign share and equal packet powers."""
    num = problem.num_devices
    tau = np.full(num, problem.fixed_share)
    power = np.full(num, float(problem.equal_power(problem.fixed_share)))
    modulus = power.copy() if problem.two_packets else np.zeros(num)
    return np.full(num, problem.total_bandwidth / num), power, modulus, tau


class _Context:
    """What every stage of one call of :func:`allocate` shares: the evaluator of Phi, the packet levels
    (tau optimized, and at the proportional share) with their grid tables, and the uniform point."""

    def __init__(self, problem: AllocationProblem, policy: str):
        self.problem = problem
        self.evaluator = evaluator_for(problem)
        self.coupled = problem.normalize == "received" or problem.descent is not None
        self.tau_free = problem.slot_share is None and problem.two_packets
        self._levels = None
        self.uniform = uniform_point(problem)
        self.link, self.gain = level_kernels.link_of(problem), np.ascontiguousarray(problem.gain, dtype=float)
        # Phi with the coefficients in one call: for the searches, where calls cost more than arithmetic
        self.fused = problem.num_devices <= _FUSED_DEVICES and policy in ("spfl", "power", "bandwidth")

    def evaluate(self, points: list[tuple], coefficients: bool = False):
        """Phi, pi_sign and pi_both (rows) of a list of allocations, in one batch, and with few devices
        (where a call costs more than its arithmetic) or when asked, every allocation's coefficients too,
        else None.  Phi is the same function's either way within a search (``self.fused``: the
        coefficients' sums give it), so that values compare to the last bit."""
        arrays = [np.stack([np.asarray(point[i], dtype=float) for point in points]) for i in range(4)]
        pi_sign, pi_both = np.empty(arrays[0].shape), np.empty(arrays[0].shape)
        level_kernels.point_arrivals(*arrays, self.gain, self.link, pi_sign, pi_both)
        if coefficients and not self.fused:
            value, sign, both = self.evaluator.phi_coefficients(pi_sign, pi_both)
            return self.evaluator.phi(pi_sign, pi_both), pi_sign, pi_both, (sign, both)
        if self.fused:
            value, sign, both = self.evaluator.phi_coefficients(pi_sign, pi_both)
            return value, pi_sign, pi_both, (sign, both)
        return self.evaluator.phi(pi_sign, pi_both), pi_sign, pi_both, None

    def coefficients(self, pi_sign: np.ndarray, pi_both: np.ndarray):
        return self.evaluator.coefficients(pi_sign, pi_both)

    @property
    def level(self) -> PacketLevel:
        """The packet level of the problem (tau optimized, or its fixed share)."""
        return self._packet_levels()[0]

    @property
    def level_fixed(self) -> PacketLevel:
        """The packet level at the fixed (or proportional) share, sharing the grid's tables."""
        return self._packet_levels()[1]

    def _packet_levels(self) -> tuple[PacketLevel, PacketLevel]:
        if self._levels is None:
            level = PacketLevel(self.problem)
            fixed = (PacketLevel(replace(self.problem, slot_share=self.problem.proportional_share), level.grid_tables)
                     if self.tau_free else level)
            self._levels = (level, fixed)
        return self._levels


class _Best:
    """The best point seen so far, (point, value, pi, ident), and the trace of its Phi after each offer."""

    def __init__(self, first):
        self.best = first
        self.trace = [first[1]]

    def offer(self, candidate) -> bool:
        value = self.best[1]
        improved = candidate[1] > value + _RELATIVE_GAIN * abs(value)
        if improved:
            self.best = candidate
        self.trace.append(self.best[1])
        return improved


class _Node:
    """One policy at one sign-share mode, with the nodes whose answers it must never be below."""

    def __init__(self, name: str, tau_free: bool, dependencies: list[_Node]):
        self.name, self.tau_free, self.dependencies = name, tau_free, dependencies
        self.answer = None          # (point, value, pi, ident) when done
        self.trace: list[float] = []


def _nodes(context: _Context, policy: str) -> list[_Node]:
    """Every node of a policy's search, each after its dependencies (the policy's own node last), in the
    order their answers are offered: SP-FL with tau optimized is never below itself at the proportional
    share, and where the linearization is a heuristic never below its ablations (power only, bandwidth
    only); the power-only policy with tau optimized is never below itself at the proportional share."""
    tau_free, coupled = context.tau_free, context.coupled
    if policy == "bandwidth":
        return [_Node("bandwidth", False, [])]
    if policy == "power":
        fixed = [_Node("power", False, [])] if tau_free else []
        return fixed + [_Node("power", tau_free, list(fixed))]
    nodes: list[_Node] = []
    ablations: list[_Node] = []
    if coupled:
        power_fixed = _Node("power", False, [])
        bandwidth = _Node("bandwidth", False, [])
        nodes += [power_fixed, bandwidth]
        ablations = [power_fixed, bandwidth]
        if tau_free:
            power_free = _Node("power", True, [power_fixed])
            nodes.append(power_free)
            ablations = [power_free, bandwidth]
    first = []
    if tau_free:
        fixed = _Node("spfl", False, [nodes[0], nodes[1]] if coupled else [])
        nodes.append(fixed)
        first.append(fixed)
    nodes.append(_Node("spfl", tau_free, first + ablations))
    return nodes


@dataclass
class _Request:
    """A separable solve: at the first linearization (``at`` None) or at the point ``at`` (an ident), and,
    for the power level, at the bandwidth ``bandwidth``."""

    node: _Node
    at: int | None
    bandwidth: np.ndarray | None = None


def _program(context: _Context, node: _Node, uniform, rounds: int):
    """The search of one node, as a generator: it yields the separable solves it needs next (a list of
    :class:`_Request`) and receives their candidates (point, value, pi, ident) in the same order.

    The order of its steps is that of an exact sequential search: the dependencies' answers are offered
    first (the incumbent is then I0), then the first chain (the first linearization, then the
    incumbent's) and the second (descent only: from I0's linearization, then the incumbent's); each chain
    stops after a solve that did not raise Phi (its first excepted) or after ``rounds`` solves.  Solves
    that depend on no incumbent are asked for early, so that they join another round's batch: the first
    chain's first solve while the dependencies run, the second chain's first while the first chain
    runs (not for the power level, which solves at the incumbent's bandwidth)."""
    early = node.name != "power"
    first = None
    if early:
        (first,) = yield [_Request(node, None)]
    while not all(dependency.answer is not None for dependency in node.dependencies):
        yield []
    search = _Best(uniform)
    for dependency in node.dependencies:
        search.offer(dependency.answer)
    seed = search.best
    second = None
    descent = context.problem.descent is not None
    starts = [None, seed[3]] if descent and rounds > 1 else [None]
    for index, start in enumerate(starts):
        for round_index in range(rounds):
            if round_index == 0 and index == 0 and first is not None:
                candidate = first
            elif round_index == 0 and index == 1 and second is not None:
                candidate = second
            else:
                at = start if round_index == 0 else search.best[3]
                # (the power level solves at the incumbent's bandwidth; the others choose it)
                requests = [_Request(node, at, search.best[0][0] if node.name == "power" else None)]
                wants_second = early and index == 0 and len(starts) > 1 and second is None
                if wants_second:
                    requests.append(_Request(node, seed[3]))
                answers = yield requests
                candidate = answers[0]
                if wants_second:
                    second = answers[1]
            improved = search.offer(candidate)
            if (not improved and round_index > 0) or round_index == rounds - 1:
                break
    point, value, pi, ident = search.best
    node.answer = (_silenced(context.problem, point), value, pi, ident)
    node.trace = search.trace


def _solve_requests(context: _Context, requests: list[_Request], coefficients: list[tuple]) -> list[tuple]:
    """The candidate points of requests of one kind of node, in one batched pass."""
    problem = context.problem
    node = requests[0].node
    level = context.level if node.tau_free else context.level_fixed
    coef_sign, coef_both = np.stack([c[0] for c in coefficients]), np.stack([c[1] for c in coefficients])
    if node.name == "power":
        # (the fine sign shares without a zoom of each device's: a more exact answer of the linearization
        # is not a better one of Phi, and this one is the answer of the solver it replaced)
        bandwidth = np.stack([request.bandwidth for request in requests])
        split = level.split(bandwidth, coef_sign, coef_both, fixed=False, refine=False)
    else:
        share, split = solve_bandwidth(level, coef_sign, coef_both, fixed=node.name == "bandwidth")
        bandwidth = share * problem.total_bandwidth
    return [(bandwidth[s], split.power_sign[s], split.power_modulus[s], split.slot_share[s])
            for s in range(coef_sign.shape[0])]


def _key(request: _Request) -> tuple:
    node = request.node
    return (node.name, node.tau_free, request.at,
            None if request.bandwidth is None else request.bandwidth.tobytes())


def _answer_from_memo(programs: dict, asks: dict, memo: dict) -> dict:
    """Give every program whose requests are all answered their candidates and collect what it asks next
    (again, while the answers are known); the programs that ask for new solves remain."""
    remaining = {}
    for node, requests in asks.items():
        stepped = False
        while True:
            if (requests and not all(_key(request) in memo for request in requests)) or (not requests and stepped):
                remaining[node] = requests   # new solves, or still waiting for its dependencies
                break
            stepped = True
            try:
                requests = programs[node].send([memo[_key(request)] for request in requests])
            except StopIteration:
                break
    return remaining


def _first_coefficients(context: _Context):
    """The first linearization of every node: descent, every packet delivered; Jensen, the devices'
    worths (its coefficients under ``all``)."""
    problem = context.problem
    if problem.descent is None:
        return context.evaluator.a, context.evaluator.b
    every = np.ones((1, problem.num_devices))
    sign, both = context.coefficients(every, every if problem.two_packets else 0.0 * every)
    return sign[0], both[0]


def _search(context: _Context, policy: str) -> Allocation:
    """The search of the policy's nodes: one compiled loop where the packet level is compiled
    (:mod:`.search_kernel`), else :func:`_search_lockstep`."""
    if context.level.compiled:
        return _search_compiled(context, policy)
    return _search_lockstep(context, policy)


def _search_compiled(context: _Context, policy: str) -> Allocation:
    """:func:`_search_lockstep`'s steps in :func:`.search_kernel.search`, with the problem's constants as the
    kernel's tuples."""
    problem = context.problem
    nodes = _nodes(context, policy)
    names = {"power": search_kernel.POWER, "bandwidth": search_kernel.BANDWIDTH, "spfl": search_kernel.SPFL}
    kinds = np.array([[names[node.name], int(node.tau_free)] for node in nodes], dtype=np.intp)
    dependencies = np.full((len(nodes), 3), -1, dtype=np.intp)
    for row, node in enumerate(nodes):
        for column, dependency in enumerate(node.dependencies):
            dependencies[row, column] = nodes.index(dependency)
    levels = []
    wanted = {(names[node.name], node.tau_free) for node in nodes}
    for tau_free, level in ((False, context.level_fixed), (True, context.level)):
        grid = _kernel_table(level, False) if (search_kernel.SPFL, tau_free) in wanted else EMPTY_GRID
        grid_fixed = _kernel_table(level, True) if (search_kernel.BANDWIDTH, tau_free) in wanted else EMPTY_GRID
        refine = _TAU_ZOOM_LEVELS if level.problem.slot_share is None and problem.two_packets else 0
        levels.append((grid, grid_fixed, level.taus(False), level.taus(True), level.single_share(False), refine))
    root = nodes[-1]
    polish = context.coupled and root.name != "bandwidth" and problem.two_packets
    rounds = 1 + (_DESCENT_ROUNDS if problem.descent is not None else _RECEIVED_ROUNDS) if context.coupled else 1
    settings = (context.fused, rounds, problem.descent is not None, polish, float(problem.total_bandwidth),
                float(problem.fixed_share), _RELATIVE_GAIN, _POLISH_STEPS, _ZOOMS, _ZOOM_STEPS,
                float(_TAU_LOGITS[1] - _TAU_LOGITS[0]), context.level.units)
    point, trace = search_kernel.search(np.stack(context.uniform).astype(float), np.stack(_first_coefficients(context)),
                                        _kernel_evaluator(context.evaluator), tuple(levels), kinds, dependencies,
                                        context.gain, context.link, settings)
    trace = tuple(float(value) for value in trace)
    return Allocation(*(np.array(row) for row in point), trace[-1], trace, policy)


def _kernel_table(level: PacketLevel, fixed: bool) -> tuple:
    """The grid's table of a level as :func:`.level_kernels.solve_shares` reads it."""
    table = level.grid_table(fixed)
    return (table.shares, *table.kernel_arrays)


def _kernel_evaluator(evaluator) -> tuple:
    """The evaluator's constants as :func:`.search_kernel.evaluate` reads them."""
    nodes = evaluator.nodes
    rows, tables = (np.empty((0, 0)), np.empty((0, 0, 0))) if nodes is None else (nodes.rows, nodes.tables)
    if isinstance(evaluator, DescentEvaluator):
        kind = search_kernel.DESCENT_ALL if nodes is None else search_kernel.DESCENT_RECEIVED
        return (kind, evaluator.vectors, evaluator.blocks, evaluator.eta, evaluator.c, rows, tables, np.empty(0),
                np.empty(0), False)
    kind = search_kernel.JENSEN_ALL if nodes is None else search_kernel.JENSEN_RECEIVED
    return (kind, np.empty((0, 0)), np.empty((0, 0, 0)), 0.0, 0.0, rows, tables, evaluator.a, evaluator.b,
            evaluator.sign_counts)


def _search_lockstep(context: _Context, policy: str) -> Allocation:
    """Every node's program in lockstep: each round, all the separable solves the nodes ask for, their
    coefficients in one batch, their solves in one batch per kind of node and their Phi in one batch."""
    problem = context.problem
    nodes = _nodes(context, policy)
    value, pi_sign, pi_both, fused = context.evaluate([context.uniform])
    uniform = (context.uniform, float(value[0]), (pi_sign[0], pi_both[0]), 0)
    known = {} if fused is None else {0: (fused[0][0], fused[1][0])}   # coefficients by ident
    rounds = 1 + (_DESCENT_ROUNDS if problem.descent is not None else _RECEIVED_ROUNDS) if context.coupled else 1
    first = _first_coefficients(context)
    points = {0: uniform[2]}   # the arrival probabilities of every point by its ident
    programs = {node: _program(context, node, uniform, rounds) for node in nodes}
    asks = {node: next(program) for node, program in programs.items()}
    memo: dict = {}   # a solve asked again (same kind, linearization point and bandwidth) has its answer
    while asks:
        requests = [request for node in nodes if node in asks for request in asks[node]]
        keys = list(dict.fromkeys(_key(request) for request in requests))
        todo = [next(request for request in requests if _key(request) == key) for key in keys]
        wanted = list(dict.fromkeys(request.at for request in todo
                                    if request.at is not None and request.at not in known))
        if wanted:
            sign, both = context.coefficients(np.stack([points[i][0] for i in wanted]),
                                              np.stack([points[i][1] for i in wanted]))
            for row, ident in enumerate(wanted):
                known[ident] = (sign[row], both[row])
        coefficients = [first if request.at is None else known[request.at] for request in todo]
        produced = [None] * len(todo)
        kinds: dict = {}
        for index, request in enumerate(todo):
            kinds.setdefault((request.node.name, request.node.tau_free), []).append(index)
        for members in kinds.values():
            for index, point in zip(members, _solve_requests(context, [todo[i] for i in members],
                                                             [coefficients[i] for i in members])):
                produced[index] = point
        if produced:
            values, pi_sign, pi_both, fused = context.evaluate(produced)
        for index, (key, point) in enumerate(zip(keys, produced)):
            ident = len(points)
            points[ident] = (pi_sign[index], pi_both[index])
            if fused is not None:
                known[ident] = (fused[0][index], fused[1][index])
            memo[key] = (point, float(values[index]), points[ident], ident)
        asks = _answer_from_memo(programs, asks, memo)
    root = nodes[-1]
    point, trace = root.answer[0], list(root.trace)
    if context.coupled and root.name != "bandwidth" and problem.two_packets:
        point = _polish(context, root, point, root.answer[1], root.answer[2], known.get(root.answer[3]), trace)
    return _result(context, point, trace, policy)


def _polish(context: _Context, node: _Node, point, value: float, pi, coefficients, trace: list[float]) -> tuple:
    """Up to ``_POLISH_STEPS`` exact improvements of the answer, one device at a time.

    Phi is affine in a device's own (pi_sign, pi_both) when the others keep theirs, so with the
    coefficients at the answer, a_k d(pi_sign) + b_k d(pi_both) is exactly what moving device k alone to
    its best split at its bandwidth changes Phi by; the device with the largest gain moves (if it is more
    than 1e-9 relative), and again from the new point.  Never below the answer."""
    level = context.level if node.tau_free else context.level_fixed
    pi_sign, pi_both = pi
    if coefficients is None:
        coefficients = tuple(c[0] for c in context.coefficients(pi_sign[None], pi_both[None]))
    for _ in range(_POLISH_STEPS):
        coef_sign, coef_both = coefficients
        split = level.split(point[0][None], coef_sign[None], coef_both[None], fixed=False)
        gain = split.value[0] - np.where(point[1] > 0, coef_sign * pi_sign + coef_both * pi_both, 0.0)
        device = int(np.argmax(gain))
        if not gain[device] > _RELATIVE_GAIN * abs(value):
            break
        moved = tuple(np.array(array, dtype=float) for array in point)
        for array, chosen in zip(moved[1:], (split.power_sign, split.power_modulus, split.slot_share)):
            array[device] = chosen[0, device]
        moved_value, signs, boths, fused = context.evaluate([moved], coefficients=True)
        if not moved_value[0] > value + _RELATIVE_GAIN * abs(value):
            break
        point, value, pi_sign, pi_both = moved, float(moved_value[0]), signs[0], boths[0]
        trace.append(value)
        coefficients = (fused[0][0], fused[1][0])
    return point


def _silenced(problem: AllocationProblem, point) -> tuple:
    """A device that sends nothing holds no bandwidth and no share (Phi is unchanged)."""
    bandwidth, power_sign, power_modulus, tau = point
    silent = ~(power_sign > 0)
    return (np.where(silent, 0.0, bandwidth), power_sign, np.where(silent, 0.0, power_modulus),
            np.where(silent, problem.fixed_share, tau))


def _result(context: _Context, point, trace: list[float], policy: str) -> Allocation:
    """The allocation at ``point``, whose Phi is ``trace[-1]`` (silencing the devices that send nothing
    does not change it: their arrival probabilities stay 0)."""
    bandwidth, power_sign, power_modulus, tau = _silenced(context.problem, point)
    return Allocation(bandwidth, power_sign, power_modulus, tau, trace[-1], tuple(trace), policy)


def _uniform(context: _Context, policy: str) -> Allocation:
    value = float(context.evaluate([context.uniform])[0][0])
    return _result(context, context.uniform, [value], "uniform")


def _scheduling(context: _Context, policy: str) -> Allocation:
    """One packet at full power to the best n devices by alpha_k pi_k(B_tot / n) U_m,k, equal shares.

    Every n is evaluated at once (row n - 1 of each array); the first best n wins."""
    problem = context.problem
    num = problem.num_devices
    value = float(context.evaluate([context.uniform])[0][0])
    trace = [value]
    full = np.full(num, float(problem.equal_power(problem.fixed_share)))
    tau = np.full(num, problem.fixed_share)
    sizes = np.arange(1, num + 1)
    each = problem.total_bandwidth / sizes[:, None]                               # (n, 1)
    t_s, t_m = thresholds(problem, np.broadcast_to(each, (num, num)), full, np.zeros(num), tau)
    pi_sign, _ = arrival_probabilities(problem, t_s, t_m)
    scores = problem.alpha * pi_sign * problem.u_modulus
    order = np.argsort(-scores, axis=1, kind="stable")
    chosen = np.zeros((num, num), dtype=bool)
    np.put_along_axis(chosen, order, sizes[None, :] <= sizes[:, None], axis=1)  # the first n of each order
    bandwidth = np.where(chosen, each, 0.0)
    power = np.where(chosen, full, 0.0)
    # Phi of every n, in chunks: under ``received`` each row's quadrature holds (nodes x K) numbers.
    rows = max(1, _BATCH_ELEMENTS // (QUADRATURE_NODES * num))
    phi = []
    for start in range(0, num, rows):
        part = slice(start, start + rows)
        t_s, t_m = thresholds(problem, bandwidth[part], power[part], np.zeros(num), tau)
        phi.append(context.evaluator.phi(*arrival_probabilities(problem, t_s, t_m)))
    phi = np.concatenate(phi)
    best = int(np.argmax(np.where(np.isnan(phi), -np.inf, phi)))  # the first best n
    point = (bandwidth[best], power[best], np.zeros(num), tau)
    if phi[best] > value + _RELATIVE_GAIN * abs(value):
        value = float(phi[best])
    else:
        point = context.uniform
    trace.append(value)
    return _result(context, point, trace, "scheduling")


_POLICIES: dict[str, Callable[[_Context, str], Allocation]] = {
    "spfl": _search,
    "power": _search,
    "bandwidth": _search,
    "uniform": _uniform,
    "scheduling": _scheduling,
}
