"""The simulator wing: one seed's federated learning over a wireless uplink, round by round.

Channel and links (:mod:`.channel`, :mod:`.transmission`), aggregation rules (:mod:`.aggregation`),
resource allocation (:mod:`.allocation`, numpy and numba kernels), local training (:mod:`.training`, :mod:`.models`,
:mod:`.kernels`), data (:mod:`.data`, :mod:`.partition`), the round loop and its run lifecycle
(:mod:`.simulation`, :mod:`.lifecycle`, :mod:`.checkpoint`) and the run folder (:mod:`.run_folder`).
It reads its settings from :mod:`spfl.configuration` and writes records declared in :mod:`spfl.records`.
"""
