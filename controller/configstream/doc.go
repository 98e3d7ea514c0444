// Package configstream carries each Gateway's configuration snapshot from
// the controller to that Gateway's proxies, which have no Kubernetes API
// access. Payloads are opaque bytes here: the caller encodes and decodes
// them.
//
// # Protocol
//
// HTTP long-poll over HTTPS (TLS 1.3, HTTP/2 when ALPN agrees), full
// snapshots, one request at a time per proxy:
//
//	GET /v1/gateways/{namespace}/{name}/config?version=V
//
// V is the version the proxy last received (empty for none), whether it
// applied it or rejected it: a rejected version is not sent again, the
// proxy waits for the next. Versions are content hashes (Version), so every
// controller replica names a payload alike and a proxy may poll any of
// them.
//
//   - 200 OK: the Gateway's version differs from V. The body is the payload,
//     Content-Type application/json, header Toolgate-Config-Version the
//     version. Answered at once when V is stale, else as soon as a new
//     version is published.
//   - 304 Not Modified: V is still current after the server's poll timeout
//     (or the server is shutting down); poll again. Carries
//     Toolgate-Config-Version.
//   - 403 Forbidden: the client certificate does not name this Gateway.
//   - 404 Not Found: the controller has translated every Gateway and this
//     one is not among them (deleted, or not accepted). Retry-After says when
//     to ask again.
//   - 503 Service Unavailable: the controller has not finished its first
//     translation; the Gateway may yet appear. Retry-After as above.
//
// # Authentication
//
// Mutual TLS against one CA (package pki). The server requires a client
// certificate issued by the CA whose URI SAN names a Gateway
// (pki.GatewayURI), and serves that Gateway only: a proxy of Gateway B can
// never read Gateway A's configuration, which holds its TLS keys. The proxy
// verifies the server's certificate against the same CA.
//
// # Client
//
// Client is the proxy's side: it polls in a loop, applies each new version,
// keeps the last good one while the controller is away, retries failures
// with exponential backoff and full jitter (at least Retry-After), and
// reads its certificate and CA from disk for every new connection, so that
// a renewed Secret takes effect without a restart.
package configstream
