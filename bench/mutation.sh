#!/usr/bin/env bash
# Mutation testing of spfl's core modules (docs/mutation.md records the score and every survivor).
#
# mutmut copies src/ and tests/ into mutants/ (git-ignored), plants one change at a time in the modules
# listed under [tool.mutmut] in pyproject.toml and runs the fast core tests that reach the changed
# function; a mutant that no test kills "survives".  Results are cached in mutants/: a second run only
# re-runs what changed.
#
#   bench/mutation.sh                      # every core module (hours on 2 busy cores)
#   bench/mutation.sh channel settings     # only these modules (allocation = the spfl.simulator.allocation package)
#   bench/mutation.sh --survivors          # re-run the survivors and untested mutants (after new tests)
#   bench/mutation.sh --unfinished channel # run only the mutants not yet run (an interrupted run goes on);
#                                          # both flags take module names to restrict them
#   bench/mutation.sh --sample 100 training  # a random sample of 100 of the module's mutants (seed 0, or
#                                          # MUTATION_SAMPLE_SEED): for modules too slow to run in full
#   MUTMUT_CHILDREN=4 bench/mutation.sh    # more workers (default 2)
#
# Naming modules re-runs all their mutants.  Changing the test selection in pyproject.toml resets every
# cached result.  Then: `mutmut results` lists the survivors, `mutmut show NAME` shows one.
set -euo pipefail
cd "$(dirname "$0")/.."
core=(simulator.channel simulator.transmission simulator.aggregation simulator.allocation simulator.simulation
      simulator.lifecycle configuration.settings configuration.reading simulator.calibration simulator.training)
full_name() {  # a module's name below spfl, given as it is (simulator.channel) or by its last part (channel)
    local m
    for m in "${core[@]}"; do
        if [ "$m" = "$1" ] || [ "${m#*.}" = "$1" ]; then echo "$m"; return 0; fi
    done
    echo "bench/mutation.sh: unknown module '$1': allowed ${core[*]#*.}" >&2
    return 2
}
full_names() { local m; for m in "$@"; do full_name "$m" || exit 2; done; }
MUTMUT="${MUTMUT:-$(dirname "$(command -v python)")/mutmut}"
[ -x "$MUTMUT" ] || MUTMUT=mutmut
if [ "${1:-}" = "--sample" ]; then
    size="${2:?--sample needs a number of mutants}"
    shift 2
    [ $# -gt 0 ] || { echo "bench/mutation.sh: --sample needs module names: allowed ${core[*]#*.}" >&2; exit 2; }
    names=$(full_names "$@") || exit 2
    only=$(printf 'spfl.%s.|' $names | sed 's/|$//; s/\./\\./g')
    mapfile -t sample < <("$MUTMUT" results --all true | awk -F': ' '{gsub(/^ +/, "", $1); print $1}' \
        | grep -E "^($only)" | sort | "$(dirname "$MUTMUT")/python" -c "
import random, sys
names = sys.stdin.read().split()
random.Random(int(sys.argv[2])).shuffle(names)
print('\n'.join(sorted(names[:int(sys.argv[1])])))" "$size" "${MUTATION_SAMPLE_SEED:-0}")
    # mutmut lists the mutants only once a run has generated them (any module's run generates all).
    [ ${#sample[@]} -eq 0 ] && { echo "no mutants of $* in mutants/: run bench/mutation.sh once first" >&2; exit 2; }
    echo "sample: ${#sample[@]} mutants of $*"
    env -u PYTHONPATH nice -n 15 "$MUTMUT" run --max-children "${MUTMUT_CHILDREN:-2}" "${sample[@]}"
    "$MUTMUT" results --all true | grep -E "^ *($only)" | awk -F': ' '{print $2}' | sort | uniq -c
    exit 0
fi
if [ "${1:-}" = "--survivors" ] || [ "${1:-}" = "--unfinished" ]; then
    wanted=$([ "$1" = "--survivors" ] && echo "survived|no tests" || echo "not checked")
    shift
    names=$(full_names "$@") || exit 2
    only=$(printf 'spfl.%s.|' $names | sed 's/|$//; s/\./\\./g')
    mapfile -t survivors < <("$MUTMUT" results --all true | awk -F': ' -v wanted="$wanted" \
        '$2 ~ "^(" wanted ")$" {gsub(/^ +/, "", $1); print $1}' | { [ $# -gt 0 ] && grep -E "^($only)" || cat; })
    [ ${#survivors[@]} -eq 0 ] && { echo "no mutants $wanted"; exit 0; }
    env -u PYTHONPATH nice -n 15 "$MUTMUT" run --max-children "${MUTMUT_CHILDREN:-2}" "${survivors[@]}"
    "$MUTMUT" results
    exit 0
fi
modules=("$@")
[ ${#modules[@]} -eq 0 ] && modules=("${core[@]}")
patterns=()
for module in "${modules[@]}"; do
    name=$(full_name "$module") || exit 2
    patterns+=("spfl.$name.*")
done
# mutmut imports spfl from mutants/src; an inherited PYTHONPATH to a source tree would shadow it.
env -u PYTHONPATH nice -n 15 "$MUTMUT" run --max-children "${MUTMUT_CHILDREN:-2}" "${patterns[@]}"
"$MUTMUT" results
