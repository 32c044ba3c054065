"""Tables from run records: every builder takes the runs a figure needs (``Run.record()`` dicts with the
run's folder) and the entry's resolved options, and returns one tidy table.

Per-figure tables have one row per group with ``n`` (seeds), ``mean``, ``std``, ``ci_low``, ``ci_high``
(:mod:`.statistics`); the plots read nothing else.  Accuracies and packet errors are in percent, so
differences are percentage points as in the paper.

Diverged runs (``status: diverged`` in summary.json: the loss or the weights became non-finite) enter no
mean, no interval and no gain: a NaN model's "accuracy" is argmax over NaN logits, not a result.  Every
per-figure table counts them per curve (``n_diverged``, ``first_diverged_round``: :mod:`.panels`).  In the
per-round tables a diverged run is left out at every round, its rounds before the divergence too, so a
curve averages the same seeds from start to end instead of jumping where a seed drops out.
"""
