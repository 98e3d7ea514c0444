#!/usr/bin/env bash
# Runs the authorization benchmarks of the filter side by side and prints
# each one's median time per operation and its throughput ratio to its
# baseline (baseline time / time): a tools/call with 20 rules against the
# same call with none (goal: at least 0.95), decided by claims (remembered
# per caller) and by arguments (decided every call), and a tools/list of
# 500 tools filtered against unfiltered.
#
# The test binary is built once; each round runs every benchmark in its own
# process, in an order that alternates from round to round, so that neither
# position nor a noisy neighbour favours one side. COUNT rounds (default
# 10) of BENCHTIME each (default 1s). RESULTS=FILE also writes the medians
# there as tab-separated values (make bench reads them).
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/bench-rounds.sh
COUNT=${COUNT:-10}
BENCHTIME=${BENCHTIME:-1s}
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
go test -c -o "$bin/filter.test" ./filter
benches=(
  '^BenchmarkAuthorization$/^rules=0$'
  '^BenchmarkAuthorization$/^rules=20$'
  '^BenchmarkAuthorization$/^rules=20-by-arguments$'
  '^BenchmarkToolsList$/^unfiltered$'
  '^BenchmarkToolsList$/^filtered$'
)
results=$bin/results
bench_rounds "$bin/filter.test" filter "$results" "${benches[@]}"
# The medians, one line a benchmark (benchmark, ns/op, tab-separated);
# with RESULTS=FILE, also written there under a header line, for make
# bench.
medians=$(awk '
  { name = $1; sub(/-[0-9]+$/, "", name); t[name] = t[name] " " $3 }
  END {
    for (n in t) {
      k = split(substr(t[n], 2), v, " ")
      for (i = 2; i <= k; i++) { x = v[i] + 0; j = i - 1; while (j > 0 && v[j] + 0 > x) { v[j+1] = v[j]; j-- } v[j+1] = x }
      printf "%s\t%.1f\n", n, (k % 2) ? v[(k+1)/2] : (v[k/2] + v[k/2+1]) / 2
    }
  }' "$results" | sort)
if [[ -n ${RESULTS:-} ]]; then
  printf 'benchmark\tns/op\n%s\n' "$medians" >"$RESULTS"
fi
printf "%-46s %14s %10s\n" "benchmark (median of $COUNT)" "ns/op" "vs base"
awk -F '\t' '
  { n[NR] = $1; t[$1] = $2 }
  END {
    base["BenchmarkAuthorization/rules=20"] = "BenchmarkAuthorization/rules=0"
    base["BenchmarkAuthorization/rules=20-by-arguments"] = "BenchmarkAuthorization/rules=0"
    base["BenchmarkToolsList/filtered"] = "BenchmarkToolsList/unfiltered"
    for (i = 1; i <= NR; i++) {
      r = (n[i] in base) ? sprintf("%.3fx", t[base[n[i]]] / t[n[i]]) : "base"
      printf "%-46s %14.0f %10s\n", n[i], t[n[i]], r
    }
  }' <<<"$medians"
