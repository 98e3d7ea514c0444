// Package dataplane races the data plane: the same small MCP tools/call
// POST, from the same load generator at the same concurrency, sent straight
// to a backend (direct), through a bare httputil.ReverseProxy that keeps
// as many idle backend connections as toolgate (bare), through toolgate
// standalone on an MCPServer route with no policy (toolgate), and through
// toolgate with a typical policy, OIDC tokens and three token buckets
// (global, per user, per user on the tool), kept in memory (memory) and in
// Redis (redis, with --store-timeout 2s so that a busy machine does not
// make it shed calls). Any answer but 200 fails the race. It reports the requests per second
// and the latency of each, medians over -rounds, and their ratios.
// `make bench-dataplane` runs it; `make test` does not.
//
// Every party is a process of its own (the toolgate binary built from this
// checkout, the backend and the load generator from ./racer, the bare proxy
// of hack/streams/streamer, redis-server), all on this machine: a ratio
// says what a proxy costs where the proxy, the backend and the load share
// the same cores, as they do under wrk on one machine.
package dataplane
