"""The fixed benchmark set of allocation problems: a seeded generator shared by the tests and bench/.

    from allocation_cases import BENCHMARK_SIZE, benchmark_case
    problem, policy = benchmark_case(17)        # the same problem on every machine and every call

Case ``index`` draws every switch from its own seeded generator: K from 2 to 100 (cycling through
``SIZES``, so every size has as many cases), the policy (``spfl`` half of the time), the surrogate (the
descent surrogate, the pipeline's default, three cases in four; else the Jensen form), ``normalize``,
``fading``, the sign share (proportional, fixed or optimized), the power constraint, the error model,
whether a lone sign counts, single-packet schemes, and for about one case in seven degenerate devices
(no link, no weight, harmful signs) or the sign packet alone (tau = 1).  Under the descent surrogate the
Gram matrix is that of gradients sharing a direction (its weight, the non-IID spread and the norms
drawn), with the rule's second vectors (signs with a common modulus, stale gradients, scaled signs), and
in one case in three the off-diagonal entries carry a sketch-like estimation error (so the matrix need
not be positive semidefinite).  Budgets are calibrated by ``sample_problem`` (scarce to ample).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from allocation_reference import sample_problem
from spfl.simulator.aggregation import get_rule
from spfl.simulator.allocation import ALLOCATION_POLICIES
from spfl.simulator.allocation.descent import DescentTerms

BENCHMARK_SIZE = 1200
SIZES = (2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30, 40, 50, 64, 80, 100)
GENERATOR_VERSION = 1  # change with any change of what a case index draws


def benchmark_case(index: int):
    """(problem, policy) of the index-th case of the benchmark set (any index >= 0 is a case)."""
    rng = np.random.default_rng([GENERATOR_VERSION, 21_000 + index])
    num = SIZES[index % len(SIZES)]
    policy = "spfl" if rng.random() < 0.5 else str(rng.choice(ALLOCATION_POLICIES[1:]))
    descent = rng.random() < 0.75
    share = str(rng.choice(["proportional", "optimized", "fixed"], p=[0.4, 0.4, 0.2]))
    single = rng.random() < 0.1
    if descent:
        rule = (str(rng.choice(["full", "stale", "signs"])) if single
                else str(rng.choice(["sign_reuse", "no_reuse"], p=[0.8, 0.2])))
        sign_only_counts = rule != "no_reuse"
    else:
        rule, sign_only_counts = None, bool(rng.random() < 0.8)
    fields = dict(fading=str(rng.choice(["block", "per_packet"], p=[0.6, 0.4])),
                  normalize=str(rng.choice(["received", "all"])),
                  power_constraint=str(rng.choice(["energy", "sum"])), sign_only_counts=sign_only_counts,
                  per_model="waterfall" if rng.random() < 0.1 else "outage",
                  slot_share=float(rng.uniform(0.02, 0.9)) if share == "fixed" else None)
    if single:
        fields["modulus_bits"] = 0
    problem = sample_problem(num, 70_000 + index, scarcity=float(rng.uniform(-2.0, 1.5)), **fields)
    if share == "proportional" and problem.two_packets:
        problem = replace(problem, slot_share=problem.proportional_share)
    if rng.random() < 0.15:  # degenerate devices: no weight, no link, harmful signs; or the sign alone
        alpha = np.where(rng.random(num) < 0.2, 0.0, problem.alpha)
        if not alpha.sum() > 0:
            alpha[0] = 1.0
        problem = replace(problem, alpha=alpha, gain=np.where(rng.random(num) < 0.2, 0.0, problem.gain),
                          u_sign=problem.u_sign * np.where(rng.random(num) < 0.3, -3.0, 1.0),
                          slot_share=1.0 if rng.random() < 0.3 else problem.slot_share)
    if descent:
        problem = replace(problem, descent=_descent_terms(rng, num, rule))
    return problem, policy


def _descent_terms(rng: np.random.Generator, num: int, rule: str) -> DescentTerms:
    """The inner products of gradients that share a direction and of the rule's second vectors."""
    dim = int(rng.integers(8, 64))
    common = rng.normal(size=dim) * rng.uniform(0.0, 2.0)
    gradients = (common + rng.uniform(0.2, 4.0) * rng.normal(size=(num, dim))) * rng.lognormal(
        0.0, rng.uniform(0.0, 1.0), (num, 1))
    if rule in ("sign_reuse", "no_reuse"):
        others = np.sign(gradients) * np.abs(gradients).mean(axis=0) * rng.uniform(0.3, 3.0)
    elif rule == "signs":
        others = np.sign(gradients) * np.abs(gradients).mean(axis=1, keepdims=True)
    elif rule == "stale":
        others = gradients + rng.uniform(0.0, 2.0) * rng.normal(size=(num, dim)) * np.abs(common).mean()
    else:
        others = np.zeros_like(gradients)
    vectors = np.vstack([gradients, others])
    gram = vectors @ vectors.T
    if rng.random() < 1 / 3:  # a sketch's estimation error on the inner products between devices
        norms = np.sqrt(np.diag(gram))
        noise = rng.normal(size=gram.shape) * np.outer(norms, norms) * rng.uniform(0.005, 0.05)
        own = np.abs(np.subtract.outer(np.arange(2 * num) % num, np.arange(2 * num) % num)) == 0
        gram = gram + np.where(own, 0.0, (noise + noise.T) / 2.0)
    learning_rate = float(10 ** rng.uniform(-2.5, -0.5))
    smoothness = float(rng.uniform(0.1, 1.9)) / learning_rate
    stale = rng.random(num) < 0.6 if rule == "stale" else None
    return rule_terms(rule, gram, learning_rate, smoothness, has_other_when_lost=stale)


def rule_terms(rule: str, gram, learning_rate: float, smoothness: float, has_other_when_lost=None) -> DescentTerms:
    """The descent terms the aggregation rule ``rule`` gives the allocator (its own ``descent_terms``);
    ``has_other_when_lost`` (stale only): which devices have a last received gradient to stand in."""
    aggregator = get_rule(rule)(np.ones(np.shape(gram)[0] // 2))
    if has_other_when_lost is not None:
        aggregator.has_stale = np.asarray(has_other_when_lost, dtype=bool)
    return aggregator.descent_terms(gram, learning_rate, smoothness)


SPEED_SCARCITIES = (-1.0, -0.5, 0.0, 0.5, 1.0)


def speed_problem(num: int, seed: int, normalize: str = "received", share: str = "proportional",
                  fading: str = "block"):
    """A round of the pipeline's default objective for timing the solver: the descent surrogate (rule
    sign_reuse, gradients sharing a direction, eta = 0.05, L = 10), budgets cycling from scarce to ample
    with the seed; ``share``: "proportional" or "optimized"."""
    rng = np.random.default_rng([GENERATOR_VERSION, 5000 + seed])
    problem = sample_problem(num, 5000 + seed, scarcity=SPEED_SCARCITIES[seed % len(SPEED_SCARCITIES)],
                             normalize=normalize, fading=fading, slot_share=None)
    if share == "proportional":
        problem = replace(problem, slot_share=problem.proportional_share)
    dim = 40
    common = rng.normal(size=dim)
    gradients = (common + rng.normal(size=(num, dim))) * rng.lognormal(0.0, 0.5, (num, 1))
    others = np.sign(gradients) * np.abs(gradients).mean(axis=0)
    vectors = np.vstack([gradients, others])
    return replace(problem, descent=rule_terms("sign_reuse", vectors @ vectors.T, 0.05, 10.0))
