"""Plotters: one function per kind of figure, called as ``plot(table, name, x, style)``, drawing from the
entry's aggregated table only (never the run records), so restyling a figure needs no simulation and no
aggregation.

Every plotter keeps the axes at ``width_in`` x ``height_in`` per panel with the legend in its own row
below (:mod:`.axes`), draws an interval only from three seeds and marks diverged runs (:mod:`.marks`),
and keeps one color and marker per method (:mod:`.style`).  Saved files carry no time stamp or software
version, so the same table gives the same bytes.
"""

import matplotlib

matplotlib.use("Agg")  # before any plotter imports pyplot: figures are files, never windows
