"""The allowed values of every categorical run setting, declared once.

The settings table (``spfl.spec``) offers them to configurations and the modules that implement them
check against them; both import these names, so adding a value is one edit here plus its
implementation.  This module imports nothing, so that validating a configuration never loads torch.
The method names are the method table itself (``spfl.methods.METHODS``).
"""

DATASETS = ("digits", "cifar10")                      # spfl.data
PARTITIONS = ("iid", "dirichlet", "shards")           # spfl.partition
MODELS = ("mlp", "cnn", "cifar_cnn")                  # spfl.models (the setting also takes "auto")
COMPENSATIONS = ("received_mean", "previous_update", "scalar")  # spfl.aggregation
NORMALIZATIONS = ("received", "all")                  # spfl.aggregation, spfl.allocation
SURROGATES = ("descent", "jensen")                    # spfl.allocation (descent, objective)
GRAM_ESTIMATES = ("sketch", "exact")                  # spfl.gram
SIGNSGD_AGGREGATIONS = ("mean", "majority")           # spfl.aggregation
FADING_MODELS = ("block", "per_packet")               # spfl.channel
PACKET_ERROR_MODELS = ("outage", "waterfall")         # spfl.channel
POWER_CONSTRAINTS = ("energy", "sum")                 # spfl.allocation
PRECISIONS = ("float32", "tf32", "bfloat16")          # spfl.training
DEVICES = ("cpu", "cuda", "auto")                     # spfl.simulation
