#!/usr/bin/env bash
# Runs the filter's Redis limits benchmark side by side and prints each
# case's median time per call, its throughput ratio to the buckets-only
# policy (baseline time / time; goal: at least 0.9 for buckets, a quota and
# an in-flight cap), its median round trips to Redis per call, and the
# median CPU time the Redis server spent per call (INFO cpu): the machine
# has two cores and Redis, single-threaded, is what runs out first.
#
# The test binary is built once; each round runs every case in a process
# of its own, in an order that alternates from round to round. COUNT rounds
# (default 10) of BENCHTIME each (default 2s). RESULTS=FILE also writes the
# medians there as tab-separated values (make bench reads them).
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/bench-rounds.sh
COUNT=${COUNT:-10}
BENCHTIME=${BENCHTIME:-2s}
./hack/redis.sh >/dev/null
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
go test -c -o "$bin/filter.test" ./filter
benches=()
for b in 'buckets' 'buckets\+quota' 'buckets\+cap' 'buckets\+quota\+cap'; do benches+=("^BenchmarkLimitsOnRedis\$/^$b\$"); done
results=$bin/results
bench_rounds "$bin/filter.test" filter "$results" "${benches[@]}"
# The medians, one line a case (benchmark, ns/op, round-trips/op,
# redis-cpu-µs/op, tab-separated); with RESULTS=FILE, also written there
# under a header line, for make bench.
medians=$(awk '
  function median(list,   k, v, i, j, x) {
    k = split(substr(list, 2), v, " ")
    for (i = 2; i <= k; i++) { x = v[i] + 0; j = i - 1; while (j > 0 && v[j] + 0 > x) { v[j+1] = v[j]; j-- } v[j+1] = x }
    return (k % 2) ? v[(k+1)/2] : (v[k/2] + v[k/2+1]) / 2
  }
  {
    name = $1; sub(/-[0-9]+$/, "", name); t[name] = t[name] " " $3
    for (i = 4; i < NF; i++) {
      if ($(i+1) == "round-trips/op") rt[name] = rt[name] " " $i
      if ($(i+1) == "redis-cpu-µs/op") cpu[name] = cpu[name] " " $i
    }
  }
  END { for (n in t) printf "%s\t%.1f\t%.3f\t%.1f\n", n, median(t[n]), median(rt[n]), median(cpu[n]) }' "$results" | sort)
if [[ -n ${RESULTS:-} ]]; then
  printf 'benchmark\tns/op\tround-trips/op\tredis-cpu-µs/op\n%s\n' "$medians" >"$RESULTS"
fi
printf "%-44s %12s %10s %14s %16s\n" "benchmark (median of $COUNT)" "ns/op" "vs base" "round-trips/op" "redis-cpu-µs/op"
awk -F '\t' '
  { n[NR] = $1; t[NR] = $2; trips[NR] = $3; cpu[NR] = $4; if ($1 == "BenchmarkLimitsOnRedis/buckets") base = $2 }
  END {
    for (i = 1; i <= NR; i++) {
      r = (n[i] == "BenchmarkLimitsOnRedis/buckets") ? "base" : sprintf("%.3fx", base / t[i])
      printf "%-44s %12.0f %10s %14.3f %16.1f\n", n[i], t[i], r, trips[i], cpu[i]
    }
  }' <<<"$medians"
