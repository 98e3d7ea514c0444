# bench_rounds runs go test benchmarks side by side, for the hack/bench-*
# scripts that source it: COUNT rounds (default 10), each running every
# pattern of the arguments in a process of its own with -test.benchtime
# BENCHTIME, in an order that alternates from round to round so that
# neither position nor a noisy neighbour favours one side. $1 is the test
# binary, $2 the folder it runs in (the package's), $3 the file the
# benchmark lines are appended to; the rest are -test.bench patterns.
bench_rounds() {
  local bin=$1 dir=$2 results=$3
  shift 3
  local benches=("$@") order round i j tmp b
  for ((round = 0; round < ${COUNT:-10}; round++)); do
    order=("${benches[@]}")
    if ((round % 2)); then
      for ((i = 0, j = ${#order[@]} - 1; i < j; i++, j--)); do tmp=${order[i]}; order[i]=${order[j]}; order[j]=$tmp; done
    fi
    for b in "${order[@]}"; do
      (cd "$dir" && "$bin" -test.run '^$' -test.bench "$b" -test.benchtime "${BENCHTIME:-1s}" -test.benchmem) |
        grep '^Benchmark' | tee -a "$results" >&2
    done
  done
}
