#!/usr/bin/env bash
# Does a test kill a mutant?  For tests written after a mutmut run: mutmut copies tests/ into mutants/ once,
# so a new test reaches its cache only on a fresh run.  This runs the given tests against mutmut's mutated
# sources (mutants/src, made by bench/mutation.sh) with one mutant switched on at a time, in a scratch copy
# (a running mutmut is not disturbed), after checking that the tests pass, and select something, with none.
#
#   bench/mutant_check.sh "PYTEST ARGS" MUTANT_NAME...
#   bench/mutant_check.sh "tests/test_channel.py::test_waterfall_links_without_bandwidth_or_time_are_dead" \
#       spfl.simulator.channel.x_failure_threshold__mutmut_68 spfl.simulator.channel.x_failure_threshold__mutmut_72
#
# Prints one line per mutant: "killed" (with the first error line), "SURVIVED", or "ERROR rc=N" (pytest
# could not run: 2-5).  Exit status: 0 if every mutant was killed, 1 otherwise.  Names: `mutmut results`.
set -uo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { echo "usage: bench/mutant_check.sh \"PYTEST ARGS\" MUTANT_NAME..." >&2; exit 2; }
[ -d mutants/src ] || { echo "bench/mutant_check.sh: no mutants/src: run bench/mutation.sh first" >&2; exit 2; }
PYTHON=$(realpath -s "$(command -v "${PYTHON:-python}")")  # absolute, the venv kept (no symlink resolved)
tests=$1
shift
scratch=$(mktemp -d "${TMPDIR:-/tmp}/spfl-mutant-check.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
cp -r mutants/src tests config docs README.md pyproject.toml "$scratch"/
cd "$scratch" || exit 2
out="$scratch/pytest.out"
run() {
    # shellcheck disable=SC2086  # the pytest arguments are meant to split
    PYTHONPATH="$scratch/src" MUTANT_UNDER_TEST="$1" nice "$PYTHON" -m pytest -x -q -p no:cacheprovider \
        -m "not slow and not slurm" $tests > "$out" 2>&1
}
run "no.mutant"
rc=$?
if [ $rc -ne 0 ]; then
    echo "the tests fail without a mutant (pytest rc $rc; 5 = no test selected):" >&2
    tail -5 "$out" >&2
    exit 2
fi
echo "without a mutant: $(tail -1 "$out")"
status=0
for mutant in "$@"; do
    run "$mutant"
    rc=$?
    case $rc in
        0) echo "SURVIVED $mutant"; status=1 ;;
        1) echo "killed   $mutant  ($(grep -m1 -E '^E ' "$out" | sed 's/^E *//' | cut -c1-90))" ;;
        *) echo "ERROR rc=$rc $mutant"; status=1 ;;
    esac
done
exit $status
