#!/usr/bin/env bash
# make bench: every benchmark in sequence, their results kept in BENCH_OUT,
# then the report with its charts written into BENCH_REPORT and one table
# of ratios printed:
#
#   1. the data-plane race (make bench-dataplane, hack/dataplane)
#   2. proxy memory of open event streams (make bench-streams, hack/streams)
#   3. the controller at scale, edits timed at 250, 500 and 1,000 HTTPRoutes
#      (make bench-controller, hack/scale)
#   4. the filter's limits on Redis and its authorization
#      (hack/bench-limits.sh, hack/bench-authz.sh)
#   5. the report (hack/benchreport)
#
# Knobs, all optional:
#   BENCH_QUICK=1         small sizes and one round, for development; the
#                         report then goes to BENCH_OUT/report
#   BENCH_OUT             the results folder (bin/bench)
#   BENCH_REPORT          the report folder (docs/bench)
#   BENCH_DATAPLANE_ARGS, BENCH_STREAMS_ARGS, BENCH_SCALE_ARGS
#                         the flags of steps 1 to 3 (their -results is added)
#   BENCH_COUNT, BENCH_TIME
#                         COUNT and BENCHTIME of step 4
set -euo pipefail
cd "$(dirname "$0")/.."

out=${BENCH_OUT:-bin/bench}
if [[ ${BENCH_QUICK:-0} == 1 ]]; then
  quick=(-quick)
  report=${BENCH_REPORT:-$out/report}
  dataplane=${BENCH_DATAPLANE_ARGS:--rounds 1 -duration 2s -warmup 1s}
  streams=${BENCH_STREAMS_ARGS:--runs 1 -levels 250,500 -sessions 500 -settle 1s}
  scale=${BENCH_SCALE_ARGS:--gateways 40 -route-steps 100 -unrelated-secrets 500 -unrelated-endpointslices 2000 -churn 200 -edits 10 -rest 5s}
  count=${BENCH_COUNT:-1}
  benchtime=${BENCH_TIME:-200ms}
else
  quick=()
  report=${BENCH_REPORT:-docs/bench}
  dataplane=${BENCH_DATAPLANE_ARGS:--rounds 3 -duration 10s}
  streams=${BENCH_STREAMS_ARGS:--runs 1 -levels 1000,2000,4000,8000}
  scale=${BENCH_SCALE_ARGS:--route-steps 250,500}
  count=${BENCH_COUNT:-5}
  benchtime=${BENCH_TIME:-}
fi
make=${MAKE:-make}

mkdir -p "$out" "$report"
results=$(cd "$out" && pwd)
report=$(cd "$report" && pwd)
# The results of an earlier run go; nothing else in BENCH_OUT is touched.
rm -f "$results"/{machine.json,dataplane.json,streams.json,scale.json,limits.tsv,authz.tsv,commands.txt,steps.tsv}

# shown writes a command as one would type it, the results folder under
# $PWD (the repository's root) when BENCH_OUT is relative.
shown() {
  local arg line=()
  for arg in "$@"; do
    [[ $out == /* ]] || arg=${arg//$results/\$PWD/$out}
    if [[ $arg =~ ^[A-Z_]+=.*\  ]]; then
      arg="${arg%%=*}=\"${arg#*=}\""
    elif [[ $arg == *' '* ]]; then
      arg="\"$arg\""
    fi
    line+=("$arg")
  done
  echo "${line[*]}"
}

# step NAME COMMAND...: runs the command, and records it and how long it
# took for the report.
step() {
  local name=$1 start=$SECONDS
  shift
  echo "== $name: $(shown "$@")"
  shown "$@" >>"$results/commands.txt"
  "$@"
  printf '%s\t%d\n' "$name" $((SECONDS - start)) >>"$results/steps.tsv"
}

go run -C hack/benchreport . machine -out "$results/machine.json" "${quick[@]}"
step "data plane" "$make" bench-dataplane ARGS="$dataplane -results $results/dataplane.json"
step "open event streams" "$make" bench-streams ARGS="$streams -results $results/streams.json"
step "controller at scale" "$make" bench-controller ARGS="$scale -results $results/scale.json"
step "limits on Redis" env COUNT="$count" ${benchtime:+BENCHTIME="$benchtime"} RESULTS="$results/limits.tsv" hack/bench-limits.sh
step "authorization" env COUNT="$count" ${benchtime:+BENCHTIME="$benchtime"} RESULTS="$results/authz.tsv" hack/bench-authz.sh
echo "== report"
go run -C hack/benchreport . render -in "$results" -out "$report"
