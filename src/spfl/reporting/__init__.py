"""The reporting wing: run records -> tables (:mod:`.analysis`) -> figures (:mod:`.plots`).

:mod:`.render` builds and writes the table or figure of one entry of the figure catalogue
(:mod:`spfl.configuration.figures`).  Nothing here imports the simulator: records are the interface.
"""
