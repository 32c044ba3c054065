"""The reporting wing: run records -> tables (:mod:`.tables`) -> figures (:mod:`.plots`).

:mod:`.render` builds and writes the table or figure of one entry of the figure catalogue
(:mod:`spfl.configuration.figures`), which names the builder and plotter of each entry.  Nothing here
imports the simulator: records are the interface.
"""
