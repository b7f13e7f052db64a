#!/usr/bin/env bash
# Instructions per metadata-only request (parse, resolve, render), counted by valgrind's
# callgrind in benches/instructions.rs: one run per case, counting only its `counted`
# function (--toggle-collect), so building up to 100,000 rules is not counted.
#
#   benches/callgrind.sh [iterations]     (default 1000; needs valgrind and cc)
#
# Unlike wall time, the counts repeat on a busy machine, to the instruction: std seeds
# every HashMap from getrandom, and the seed moves the resolver's hash probes and the
# order resolve sorts in by a few instructions per request, so the runs preload a
# getrandom that returns fixed bytes.
# Valgrind hides SHA-NI, so the ETag's SHA-256 runs sha2's portable code and takes a
# larger share of the count than on the real CPU.
# Output files go to target/callgrind/ (open one with callgrind_annotate or kcachegrind).
set -euo pipefail
cd "$(dirname "$0")/.."

iterations=${1:-1000}
out=target/callgrind
mkdir -p "$out"

fixed_random=$out/fixed_getrandom.so
"${CC:-cc}" -shared -fPIC -O2 -x c -o "$fixed_random" - <<'C'
#include <string.h>
#include <sys/types.h>
ssize_t getrandom(void *buf, size_t len, unsigned int flags) {
    (void)flags;
    memset(buf, 0x5a, len);
    return (ssize_t)len;
}
C

exe=$(cargo bench --bench instructions --no-run --message-format=json |
    sed -n 's/.*"executable":"\([^"]*\/instructions-[^"]*\)".*/\1/p')
if [[ -z $exe ]]; then
    echo "callgrind.sh: cargo built no instructions bench executable" >&2
    exit 1
fi

printf '%-44s %8s %8s %5s %15s %12s\n' case rules releases tags instructions 'per request'
count() {
    local rules=$1 history=$2 tags=$3
    local case=metadata_path_${rules}_rules_${history}_releases_${tags}_tags
    LD_PRELOAD=$fixed_random FLEETPACK_INSTRUCTIONS_RULES=$rules \
        FLEETPACK_INSTRUCTIONS_HISTORY=$history FLEETPACK_INSTRUCTIONS_TAGS=$tags \
        FLEETPACK_INSTRUCTIONS_ITERATIONS=$iterations \
        valgrind --tool=callgrind --collect-atstart=no '--toggle-collect=*::counted' \
        --callgrind-out-file="$out/$case.out" --log-file="$out/$case.log" \
        "$exe" >/dev/null
    local total
    total=$(sed -n 's/^totals: *//p' "$out/$case.out")
    if [[ -z $total || $total == 0 ]]; then
        echo "callgrind.sh: nothing counted for $case; see $out/$case.log" >&2
        exit 1
    fi
    printf '%-44s %8s %8s %5s %15s %12s\n' "$case" "$rules" "$history" "$tags" "$total" \
        "$((total / iterations))"
}
for rules in 10 1000 100000; do
    for tags in 0 256; do
        count "$rules" 1 "$tags"
    done
done
# Releases kept per app and channel: the cost must not grow with them.
for tags in 0 256; do
    count 1000 50 "$tags"
done
