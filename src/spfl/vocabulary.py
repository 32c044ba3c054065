"""The allowed values of every categorical run setting, declared once.

The settings table (``spfl.configuration.settings``) offers them to configurations and the modules that
implement them check against them; both import these names, so adding a value is one edit here plus its
implementation.  This module imports nothing, so that validating a configuration never loads torch.
The method names are the method table's (``spfl.configuration.methods.METHODS``), the dataset names the
dataset registry's (``spfl.configuration.datasets.DATASETS``).
"""

PARTITIONS = ("iid", "dirichlet", "shards")           # spfl.simulator.partition
MODELS = ("mlp", "cnn", "cifar_cnn")                  # spfl.simulator.models (the setting also takes "auto")
COMPENSATIONS = ("received_mean", "previous_update", "scalar")  # spfl.simulator.aggregation
NORMALIZATIONS = ("received", "all")                  # spfl.simulator.aggregation, spfl.simulator.allocation
SURROGATES = ("descent", "jensen")                    # spfl.simulator.allocation (descent, objective)
GRAM_ESTIMATES = ("sketch", "exact")                  # spfl.simulator.gram
SIGNSGD_AGGREGATIONS = ("mean", "majority")           # spfl.simulator.aggregation
FADING_MODELS = ("block", "per_packet")               # spfl.simulator.channel
PACKET_ERROR_MODELS = ("outage", "waterfall")         # spfl.simulator.channel
POWER_CONSTRAINTS = ("energy", "sum")                 # spfl.simulator.allocation
PRECISIONS = ("float32", "tf32", "bfloat16")          # spfl.simulator.training
DEVICES = ("cpu", "cuda", "auto")                     # spfl.simulator.simulation
