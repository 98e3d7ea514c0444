// Package streams measures what open MCP event streams cost a proxy: the
// resident memory, Go heap and goroutines of toolgate at 0, 2,000 and 8,000
// idle authenticated streams (GET with Accept: text/event-stream through an
// MCPServer route), and at 8,000 MCP sessions (initialize, then a stream
// each), beside a bare httputil.ReverseProxy and nginx doing the same. It
// reports KiB and goroutines per stream, medians over -runs.
// `make bench-streams` runs it; `make test` does not.
//
// Every party is a process of its own (the toolgate binary built from this
// checkout in standalone mode; a backend and clients of 2,000 streams each
// from ./streamer), since a proxied stream holds two open files in the
// proxy and a process may hold at most 20,000 here.
package streams
