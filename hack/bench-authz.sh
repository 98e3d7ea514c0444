#!/usr/bin/env bash
# Runs the authorization benchmarks of the filter side by side, COUNT times
# each (default 10), and prints each one's median time per operation and
# its ratio to its baseline: a tools/call with 20 rules against the same
# call with none (throughput ratio: baseline time / time, the goal is at
# least 0.95), and a tools/list of 500 tools filtered against unfiltered.
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT=${COUNT:-10}
out=$(go test -run '^$' -bench '^(BenchmarkAuthorization|BenchmarkToolsList)$' -benchtime "${BENCHTIME:-20000x}" -count "$COUNT" ./filter | grep '^Benchmark')
echo "$out" >&2
echo "$out" | awk '
  { name = $1; sub(/-[0-9]+$/, "", name); t[name] = t[name] " " $3 }
  END {
    for (n in t) {
      k = split(substr(t[n], 2), v, " ")
      # sort v numerically (insertion sort: k is small)
      for (i = 2; i <= k; i++) { x = v[i] + 0; j = i - 1; while (j > 0 && v[j] + 0 > x) { v[j+1] = v[j]; j-- } v[j+1] = x }
      med[n] = (k % 2) ? v[(k+1)/2] : (v[k/2] + v[k/2+1]) / 2
    }
    base["BenchmarkAuthorization/rules=20"] = "BenchmarkAuthorization/rules=0"
    base["BenchmarkAuthorization/rules=20-by-arguments"] = "BenchmarkAuthorization/rules=0"
    base["BenchmarkToolsList/filtered"] = "BenchmarkToolsList/unfiltered"
    for (n in med) {
      r = (n in base) ? sprintf("%.3fx", med[base[n]] / med[n]) : "base"
      printf "%-46s %14.0f %10s\n", n, med[n], r
    }
  }' | sort | { printf "%-46s %14s %10s\n" "benchmark (median of $COUNT)" "ns/op" "vs base"; cat; }
