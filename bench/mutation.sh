#!/usr/bin/env bash
# Mutation testing of spfl's core modules (docs/mutation.md records the score and every survivor).
#
# mutmut copies src/ and tests/ into mutants/ (git-ignored), plants one change at a time in the modules
# listed under [tool.mutmut] in pyproject.toml and runs the fast core tests that reach the changed
# function; a mutant that no test kills "survives".  Results are cached in mutants/: a second run only
# re-runs what changed.
#
#   bench/mutation.sh                      # every core module (about an hour on 2 busy cores)
#   bench/mutation.sh channel spec         # only these modules (allocation = the spfl.allocation package)
#   MUTMUT_CHILDREN=4 bench/mutation.sh    # more workers (default 2)
#
# Then: `mutmut results` lists the survivors, `mutmut show NAME` shows one.
set -euo pipefail
cd "$(dirname "$0")/.."
core=(channel transmission aggregation allocation simulation spec calibration training)
modules=("$@")
[ ${#modules[@]} -eq 0 ] && modules=("${core[@]}")
patterns=()
for module in "${modules[@]}"; do
    case " ${core[*]} " in
        *" $module "*) patterns+=("spfl.$module.*") ;;
        *) echo "bench/mutation.sh: unknown module '$module': allowed ${core[*]}" >&2; exit 2 ;;
    esac
done
MUTMUT="${MUTMUT:-$(dirname "$(command -v python)")/mutmut}"
[ -x "$MUTMUT" ] || MUTMUT=mutmut
# mutmut imports spfl from mutants/src; an inherited PYTHONPATH to a source tree would shadow it.
env -u PYTHONPATH nice -n 15 "$MUTMUT" run --max-children "${MUTMUT_CHILDREN:-2}" "${patterns[@]}"
"$MUTMUT" results
