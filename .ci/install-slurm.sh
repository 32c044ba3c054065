#!/usr/bin/env bash
# Install a single-node SLURM (Debian's slurm-wlm) and munge for tests/test_slurm.py.
#
# Why a script: CI must install the real scheduler (issue #5: no mocks) rather than skip the test.
# Idempotent: when every binary the test needs is already there it does nothing, so it is cheap to run
# before every test run.  The package scripts cannot start daemons on machines without systemd; the
# test starts and stops them itself (tests/slurm_cluster.py).  Needs root (or sudo) and the Debian
# mirrors; exits non-zero when anything is still missing afterwards.
set -euo pipefail

NEEDED=(slurmctld slurmd munged sbatch srun squeue sinfo scontrol scancel)
export PATH="$PATH:/usr/sbin:/sbin"  # the daemons live in sbin, which a non-root PATH may lack

missing() {
    local name
    for name in "${NEEDED[@]}"; do
        command -v "$name" >/dev/null 2>&1 || echo "$name"
    done
    id munge >/dev/null 2>&1 || echo "user munge"
}

if [ -z "$(missing)" ]; then
    echo "install-slurm: slurm-wlm and munge already installed"
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
else
    echo "install-slurm: need root (or sudo) to install slurm-wlm and munge" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -q
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends slurm-wlm munge

still_missing="$(missing)"
if [ -n "$still_missing" ]; then
    echo "install-slurm: still missing after install: $still_missing" >&2
    exit 1
fi
echo "install-slurm: installed $(dpkg-query -W -f='${Package} ${Version}, ' slurm-wlm munge | sed 's/, $//')"
