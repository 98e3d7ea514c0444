// Package gateway is toolgate's data plane: it serves the listeners of an
// immutable [Config] snapshot, routes each request by the HTTPRoute rules of
// the Gateway API, applies the rule's filters and proxies it, streaming, to a
// weighted backend endpoint with MCP session affinity.
//
// The package knows nothing of Kubernetes: a translator (in controller/)
// turns Gateway API objects into a [Config], and [Server.Apply] swaps it in
// atomically. A Config is plain data with one wire form ([EncodeConfig]), so
// that it can travel from the controller to the proxies; Apply builds the
// handlers, TLS pairs and ExtensionRef filters (with
// [Options.Extensions]) from it. Implementation-specific behaviour is
// documented where it is decided; the main choices are:
//
//   - Regular expressions (path, header and query parameter matches) are Go
//     RE2 and must match the whole value.
//   - Path precedence: Exact, then RegularExpression (longer pattern first),
//     then PathPrefix (longer value first); the spec leaves regular
//     expressions implementation-specific.
//   - Request paths are normalized before matching (dot segments resolved,
//     repeated slashes merged) and the normalized path is what the backend
//     receives, so a route's policy cannot be sidestepped with "/a/../b".
//   - Repeated headers match when any one value matches; repeated query
//     parameters match on their first value.
//   - A request is matched against the rules of every route hostname that
//     matches its host; hostname specificity breaks ties after the match
//     criteria (see precedes for why). Listeners sharing a port are
//     isolated: the best-matching listener alone serves a request.
//   - Unset timeouts mean no timeout, so event streams are never cut by
//     default.
package gateway
