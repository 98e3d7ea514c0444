#!/usr/bin/env bash
# Compares a small MCP tools/call POST sent straight to a backend with the
# same request through the gateway (one route, no filters): same client,
# same concurrency, one run, loopback only. Prints the go test benchmark
# lines and the gateway/direct ratios.
#
#   hack/bench-proxy.sh            # 3s per benchmark
#   BENCHTIME=10s hack/bench-proxy.sh
set -euo pipefail
cd "$(dirname "$0")/.."

benchtime=${BENCHTIME:-3s}
out=$(go test -run '^$' -bench '^(BenchmarkProxy|BenchmarkGatewayHandler)$' -benchtime="$benchtime" ./gateway/)
echo "$out"

# Each benchmark line is: name iterations value unit value unit ...
echo "$out" | awk '
  /^BenchmarkProxy\/(direct|gateway)/ {
    kind = ($1 ~ /direct/) ? "direct" : "gateway"
    for (i = 3; i < NF; i += 2) v[kind, $(i + 1)] = $i
  }
  /^BenchmarkGatewayHandler/ {
    for (i = 3; i < NF; i += 2) h[$(i + 1)] = $i
  }
  END {
    if (v["direct", "req/s"] == "" || v["gateway", "req/s"] == "") { print "benchmark lines missing" > "/dev/stderr"; exit 1 }
    printf "\n%-28s %12s %12s %8s\n", "", "direct", "gateway", "ratio"
    printf "%-28s %12.0f %12.0f %8.2f\n", "requests/s", v["direct", "req/s"], v["gateway", "req/s"], v["gateway", "req/s"] / v["direct", "req/s"]
    printf "%-28s %12.0f %12.0f %8.2f\n", "p50 latency (µs)", v["direct", "p50-µs"], v["gateway", "p50-µs"], v["gateway", "p50-µs"] / v["direct", "p50-µs"]
    printf "%-28s %12.0f %12.0f %8.2f\n", "p99 latency (µs)", v["direct", "p99-µs"], v["gateway", "p99-µs"], v["gateway", "p99-µs"] / v["direct", "p99-µs"]
    printf "%-28s %12s %12.0f\n", "allocs added per request", "", v["gateway", "gateway-allocs/op"]
    printf "%-28s %12s %12.0f\n", "gateway handler allocs/op", "", h["allocs/op"]
  }'
