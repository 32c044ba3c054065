"""The configuration wing: what to run, declared and checked, with no simulator or reporting code.

- :mod:`.settings`: the run settings (one table generating the run schema, the cell hash and the README table),
  and :mod:`.reading`: the one bounded YAML 1.2 / JSON reader of spec files, ``--set`` values and configs;
- :mod:`.datasets`: one row of facts per dataset (sizes, sample shape, classes, default model);
- :mod:`.methods`: each method as a composition of a scheme, an aggregation rule and a policy;
- :mod:`.pipeline` and :mod:`.plan`: a pipeline config read, validated and expanded into cells and runs;
- :mod:`.figures`: the catalogue of figures and tables; :mod:`.generated`: the files derived from both.

This package imports neither :mod:`spfl.simulator` nor :mod:`spfl.reporting` (a test checks it), so the
workflow plans without torch, pandas or matplotlib.
"""

from spfl.configuration.figures import FIGURES
from spfl.configuration.pipeline import ConfigError, generated_schemas, load_config_file, read_config
from spfl.configuration.plan import Cell, Plan, Run, cell_hash, load_plan

__all__ = ["FIGURES", "Cell", "ConfigError", "Plan", "Run", "cell_hash", "generated_schemas", "load_config_file",
           "load_plan", "read_config"]
