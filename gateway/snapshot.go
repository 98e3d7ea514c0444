package gateway

import (
	"encoding/json"
	"fmt"
	"iter"
	"net/http"
	"time"

	"github.com/toolgate/toolgate/filter"
)

// Config is one complete, immutable snapshot of what the data plane serves.
// The translator builds a new Config for every change and hands it to
// [Server.Apply]; nothing in a Config may be modified after that call.
//
// A Config is plain data: certificates are PEM, an MCP policy is its
// [filter.Policy], and the server builds the handlers, filters and TLS
// material it needs from them when it compiles the snapshot. That is what
// lets the controller send each proxy its Gateway's Config over the network;
// [EncodeConfig] and [DecodeConfig] are its one wire form, which /config and
// the translator's golden files show too.
//
// Enumerations use the Gateway API's own spellings, so a translator converts
// them with a plain string conversion.
type Config struct {
	// Version is the config's version as given by whoever produced it (the
	// config stream sets it), for logs and /readyz; the gateway does not
	// interpret it.
	Version string `json:"version,omitempty"`
	// Listeners are the Gateway's listeners. Listeners with the same Address
	// and Port share one socket and must have the same Protocol; a request is
	// served by the one whose Hostname matches best (exact, then the longest
	// wildcard, then the listener without a hostname).
	Listeners []Listener `json:"listeners,omitempty"`
	// BackendClientCertificate, when set, is the certificate the gateway
	// presents to every backend it reaches over TLS that asks for one (a
	// Gateway's spec.tls.backend.clientCertificateRef): those with a
	// BackendTLS and those of scheme https. A pair that does not parse
	// fails Apply.
	BackendClientCertificate *Certificate `json:"backendClientCertificate,omitempty"`
}

// MCPServers yields the policy of every resolved ExtensionRef in c, of
// rules and backends alike (a server referred to twice comes twice): the MCP
// servers c enforces, as [filter.Shared.Retain] wants them once c is
// applied.
func (c *Config) MCPServers() iter.Seq[*filter.Policy] {
	return func(yield func(*filter.Policy) bool) {
		each := func(filters []Filter) bool {
			for _, f := range filters {
				if f.ExtensionRef != nil && f.ExtensionRef.MCPServer != nil && !yield(f.ExtensionRef.MCPServer) {
					return false
				}
			}
			return true
		}
		for _, l := range c.Listeners {
			for _, vh := range l.VirtualHosts {
				for _, r := range vh.Routes {
					for _, rule := range r.Rules {
						if !each(rule.Filters) {
							return
						}
						for _, b := range rule.Backends {
							if !each(b.Filters) {
								return
							}
						}
					}
				}
			}
		}
	}
}

// Protocol is a listener's protocol.
type Protocol string

// Protocols a listener can serve.
const (
	ProtocolHTTP  Protocol = "HTTP"
	ProtocolHTTPS Protocol = "HTTPS"
)

// Listener is one Gateway listener.
type Listener struct {
	// Name identifies the listener in logs, metrics and /config, for
	// example "team-a/gw/https".
	Name string `json:"name"`
	// Address is the IP address to bind; empty binds every address.
	Address string `json:"address,omitempty"`
	// Port is the TCP port. Port 0 binds a free port (see [Server.Addr]); it
	// is meant for tests.
	Port int `json:"port"`
	// Protocol is HTTP or HTTPS.
	Protocol Protocol `json:"protocol"`
	// Hostname is the listener's hostname: empty (any host), a name, or a
	// wildcard such as "*.example.com" (one or more labels before the
	// suffix). It selects the listener among those sharing a port, by Host
	// header and, for HTTPS, by SNI.
	Hostname string `json:"hostname,omitempty"`
	// Certificates serve HTTPS. The first one the client supports is used.
	Certificates []Certificate `json:"certificates,omitempty"`
	// ClientValidation, on an HTTPS listener, verifies the certificates
	// clients present (a Gateway's spec.tls.frontend).
	ClientValidation *ClientValidation `json:"clientValidation,omitempty"`
	// VirtualHosts hold the routes attached to this listener.
	VirtualHosts []VirtualHost `json:"virtualHosts,omitempty"`
}

// Certificate is one certificate of an HTTPS listener with its private key,
// both PEM, as a kubernetes.io/tls Secret holds them. The server parses them
// when it compiles a snapshot: a pair that does not parse fails Apply.
type Certificate struct {
	// CertificatePEM is the certificate chain, leaf first.
	CertificatePEM string `json:"certificatePEM"`
	// PrivateKeyPEM is the leaf's private key. [Config.Redacted] replaces
	// it with "[redacted]".
	PrivateKeyPEM string `json:"privateKeyPEM,omitempty"`
}

// VirtualHost groups routes by the hostnames they serve on a listener.
// The translator may emit one VirtualHost per route or group routes with the
// same hostnames; the gateway merges rules of equal hostnames across
// VirtualHosts and orders them by the spec's precedence either way.
type VirtualHost struct {
	// Hostnames are the effective hostnames: the intersection of the
	// listener's hostname and the route's hostnames, computed by the
	// translator. Empty means every host the listener accepts. Names are
	// lower case; a leading "*." is a wildcard label.
	Hostnames []string `json:"hostnames,omitempty"`
	// Routes are the HTTPRoutes serving these hostnames, in any order.
	Routes []Route `json:"routes,omitempty"`
}

// Route is one HTTPRoute as attached to a listener.
type Route struct {
	// Namespace and Name identify the route; "{namespace}/{name}" breaks
	// precedence ties and labels metrics and logs.
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// CreationTimestamp breaks precedence ties: older routes win. In JSON
	// it is RFC 3339 with nanoseconds, so that ties survive the wire.
	CreationTimestamp time.Time `json:"creationTimestamp,omitzero"`
	// Rules are in the route's list order, which breaks the last ties.
	Rules []Rule `json:"rules,omitempty"`
}

// Rule is one HTTPRoute rule.
type Rule struct {
	// Name is the optional rule name (sectionName), for logs.
	Name string `json:"name,omitempty"`
	// Matches are ORed. No matches means one PathPrefix "/" match.
	Matches []Match `json:"matches,omitempty"`
	// Filters run in list order before the request reaches a backend.
	Filters []Filter `json:"filters,omitempty"`
	// Backends are chosen by weight. A rule without backends (and without a
	// RequestRedirect filter) answers 500.
	Backends []Backend `json:"backends,omitempty"`
	// Timeouts bound the request.
	Timeouts Timeouts `json:"timeouts,omitzero"`
	// Retry, when set, sends a backend request again on the statuses it
	// names and on failed connections.
	Retry *Retry `json:"retry,omitempty"`
}

// Timeouts are an HTTPRoute rule's timeouts. Zero means no timeout, which is
// both the spec's meaning of "0s" and this gateway's default when the field
// is unset: a healthy event stream is never cut unless the route asks for it.
type Timeouts struct {
	// Request bounds the whole exchange, from the request's arrival to the
	// end of the response body, filters included. Past it the client gets
	// 504 if no response has started, otherwise the response is cut.
	Request time.Duration
	// BackendRequest bounds one request to a backend, from the moment it is
	// sent until the full response has been received.
	BackendRequest time.Duration
}

// timeoutsJSON is Timeouts' JSON form: Go duration strings, as the Gateway
// API's Duration is written ("10s"), zero left out.
type timeoutsJSON struct {
	Request        string `json:"request,omitempty"`
	BackendRequest string `json:"backendRequest,omitempty"`
}

// MarshalJSON encodes the timeouts as Go duration strings, leaving out
// zero ones.
func (t Timeouts) MarshalJSON() ([]byte, error) {
	var v timeoutsJSON
	if t.Request != 0 {
		v.Request = t.Request.String()
	}
	if t.BackendRequest != 0 {
		v.BackendRequest = t.BackendRequest.String()
	}
	return json.Marshal(v)
}

// UnmarshalJSON decodes what MarshalJSON encodes; a missing timeout is
// zero.
func (t *Timeouts) UnmarshalJSON(data []byte) error {
	if string(data) == "null" {
		return nil // as encoding/json does for values it decodes itself
	}
	var v timeoutsJSON
	if err := json.Unmarshal(data, &v); err != nil {
		return fmt.Errorf("timeouts: %w", err)
	}
	var out Timeouts
	for _, f := range []struct {
		name string
		in   string
		out  *time.Duration
	}{
		{"request", v.Request, &out.Request},
		{"backendRequest", v.BackendRequest, &out.BackendRequest},
	} {
		if f.in == "" {
			continue
		}
		d, err := time.ParseDuration(f.in)
		if err != nil {
			return fmt.Errorf("timeouts: %s: %w", f.name, err)
		}
		*f.out = d
	}
	*t = out
	return nil
}

// Match is one HTTPRouteMatch; its conditions are ANDed.
type Match struct {
	// Path is the path condition; the zero value is PathPrefix "/".
	Path PathMatch `json:"path"`
	// Headers must all match. Names are case-insensitive; of several entries
	// with the same name only the first counts.
	Headers []HeaderMatch `json:"headers,omitempty"`
	// QueryParams must all match. Names are case-sensitive; of several
	// entries with the same name only the first counts.
	QueryParams []QueryParamMatch `json:"queryParams,omitempty"`
	// Method, if set, is the upper-case HTTP method to match.
	Method string `json:"method,omitempty"`
}

// PathMatchType says how a path is matched.
type PathMatchType string

// Path match types.
const (
	// PathMatchExact matches the whole path, case-sensitively.
	PathMatchExact PathMatchType = "Exact"
	// PathMatchPathPrefix matches whole path segments: "/foo" matches "/foo"
	// and "/foo/bar" but not "/foobar". A trailing "/" in the value is
	// ignored.
	PathMatchPathPrefix PathMatchType = "PathPrefix"
	// PathMatchRegularExpression matches the whole path against an RE2
	// regular expression.
	PathMatchRegularExpression PathMatchType = "RegularExpression"
)

// PathMatch is a path condition. The zero value matches every path.
type PathMatch struct {
	Type  PathMatchType `json:"type,omitempty"`  // empty means PathPrefix
	Value string        `json:"value,omitempty"` // empty means "/"
}

// MatchType says how a header or query parameter value is matched.
type MatchType string

// Value match types.
const (
	// MatchExact compares values exactly.
	MatchExact MatchType = "Exact"
	// MatchRegularExpression matches the whole value against an RE2
	// regular expression.
	MatchRegularExpression MatchType = "RegularExpression"
)

// HeaderMatch is a request header condition.
type HeaderMatch struct {
	Type  MatchType `json:"type,omitempty"` // empty means Exact
	Name  string    `json:"name"`
	Value string    `json:"value"`
}

// QueryParamMatch is a query parameter condition.
type QueryParamMatch struct {
	Type  MatchType `json:"type,omitempty"` // empty means Exact
	Name  string    `json:"name"`
	Value string    `json:"value"`
}

// FilterType names a filter.
type FilterType string

// Filter types.
const (
	FilterRequestHeaderModifier  FilterType = "RequestHeaderModifier"
	FilterResponseHeaderModifier FilterType = "ResponseHeaderModifier"
	FilterRequestRedirect        FilterType = "RequestRedirect"
	FilterURLRewrite             FilterType = "URLRewrite"
	FilterCORS                   FilterType = "CORS"
	FilterRequestMirror          FilterType = "RequestMirror"
	FilterExtensionRef           FilterType = "ExtensionRef"
)

// Filter is one HTTPRoute filter; the field named by Type is set.
type Filter struct {
	Type                   FilterType      `json:"type"`
	RequestHeaderModifier  *HeaderModifier `json:"requestHeaderModifier,omitempty"`
	ResponseHeaderModifier *HeaderModifier `json:"responseHeaderModifier,omitempty"`
	RequestRedirect        *Redirect       `json:"requestRedirect,omitempty"`
	URLRewrite             *URLRewrite     `json:"urlRewrite,omitempty"`
	CORS                   *CORS           `json:"cors,omitempty"`
	RequestMirror          *RequestMirror  `json:"requestMirror,omitempty"`
	ExtensionRef           *ExtensionRef   `json:"extensionRef,omitempty"`
}

// HeaderModifier sets, adds and removes headers, in that order. Add appends
// to an existing value with a comma (Set-Cookie gets its own line).
type HeaderModifier struct {
	Set    []Header `json:"set,omitempty"`
	Add    []Header `json:"add,omitempty"`
	Remove []string `json:"remove,omitempty"`
}

// Header is a header name and value.
type Header struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// Redirect answers with a redirection. Empty fields keep the request's
// value; the query string is kept.
type Redirect struct {
	// Scheme is "http" or "https"; empty keeps the request's scheme.
	Scheme string `json:"scheme,omitempty"`
	// Hostname replaces the request's host name.
	Hostname string `json:"hostname,omitempty"`
	// Port is the Location port. Zero derives it as the spec says: the
	// scheme's well-known port when Scheme is set, else the listener's port.
	// Port 80 for http and 443 for https are left out of the Location.
	Port int `json:"port,omitempty"`
	// Path rewrites the path; nil keeps it.
	Path *PathModifier `json:"path,omitempty"`
	// StatusCode is 301, 302, 303, 307 or 308; zero means 302.
	StatusCode int `json:"statusCode,omitempty"`
}

// URLRewrite modifies the request before it is forwarded.
type URLRewrite struct {
	// Hostname replaces the Host header sent to the backend.
	Hostname string `json:"hostname,omitempty"`
	// Path rewrites the path; nil keeps it.
	Path *PathModifier `json:"path,omitempty"`
}

// PathModifierType says how a path is rewritten.
type PathModifierType string

// Path modifier types.
const (
	// ReplaceFullPath replaces the whole path.
	ReplaceFullPath PathModifierType = "ReplaceFullPath"
	// ReplacePrefixMatch replaces the PathPrefix that matched the request,
	// segment-wise. It needs a PathPrefix match; with any other match the
	// path is left unchanged (the translator rejects such rules).
	ReplacePrefixMatch PathModifierType = "ReplacePrefixMatch"
)

// PathModifier is a path rewrite.
type PathModifier struct {
	Type               PathModifierType `json:"type"`
	ReplaceFullPath    string           `json:"replaceFullPath,omitempty"`
	ReplacePrefixMatch string           `json:"replacePrefixMatch,omitempty"`
}

// CORS answers browsers' cross-origin requests to a rule (the Gateway API's
// HTTPCORSFilter). The gateway answers a preflight (OPTIONS with Origin and
// Access-Control-Request-Method) itself, and adds the CORS headers to every
// other response of the rule, whatever filter or backend writes it; it
// runs before the rule's other filters, wherever the list has it. See
// [CORS.Check] for the values it accepts.
type CORS struct {
	// AllowOrigins are the origins allowed: "*" alone for every one, or
	// scheme://host[:port] with scheme http or https, where host may be
	// "*" (any host) or start with "*." (any name below, at any depth).
	// Without a port, the scheme's (80 or 443) is meant. An allowed
	// origin is echoed in Access-Control-Allow-Origin ("*" answers "*"
	// unless AllowCredentials).
	AllowOrigins []string `json:"allowOrigins,omitempty"`
	// AllowCredentials answers Access-Control-Allow-Credentials: true.
	AllowCredentials bool `json:"allowCredentials,omitempty"`
	// AllowMethods and AllowHeaders are what a preflight may ask for; "*"
	// alone answers whatever it asks for.
	AllowMethods []string `json:"allowMethods,omitempty"`
	AllowHeaders []string `json:"allowHeaders,omitempty"`
	// ExposeHeaders are the response header fields a page may read beside
	// the safelisted ones; "*" exposes all of them.
	ExposeHeaders []string `json:"exposeHeaders,omitempty"`
	// MaxAge is how many seconds a browser may keep a preflight's answer.
	// Zero sends no Access-Control-Max-Age; the translator applies the
	// spec's default of 5.
	MaxAge int32 `json:"maxAge,omitempty"`
}

// RequestMirror sends a copy of a share of the rule's requests to another
// backend and discards its answer (the Gateway API's
// HTTPRequestMirrorFilter). The copy is the request as the filters before
// this one left it, with its body when the body is at most 1 MiB (a longer
// one is not mirrored), sent to one endpoint of Backend once the request is
// forwarded to its own backend: a request the gateway answers itself (a
// redirect, a refusal of an MCP policy, a backend with no endpoint) is not
// mirrored. The mirror's failure or slowness never changes or delays the
// client's answer. A mirror of a request under an MCP policy (a rule or
// backend with an MCPServer ExtensionRef) carries no credential: its
// Authorization header and the policy's backendAuth header are removed.
type RequestMirror struct {
	// Backend is where copies go. Its Weight and Filters are not used; an
	// Invalid backend (an unresolved backendRef) receives nothing.
	Backend Backend `json:"backend"`
	// Fraction, when set, is the share of requests mirrored, each request
	// drawn independently; nil mirrors every request.
	Fraction *Fraction `json:"fraction,omitempty"`
}

// Fraction is Numerator/Denominator, with 0 <= Numerator <= Denominator
// and Denominator > 0.
type Fraction struct {
	Numerator   int32 `json:"numerator"`
	Denominator int32 `json:"denominator"`
}

// ExtensionRef is an implementation-specific filter: the MCP policy filter
// of an MCPServer. It carries the resolved policy, not a filter: the server
// builds the filter with [Options.Extensions] when it compiles the snapshot.
type ExtensionRef struct {
	// Group, Kind and Name are the reference, for /config and error
	// messages.
	Group string `json:"group"`
	Kind  string `json:"kind"`
	Name  string `json:"name"`
	// MCPServer is the resolved policy of the referenced MCPServer. Nil
	// means the reference could not be resolved: matching requests get 500
	// (GEP-1364); the filter is never skipped.
	MCPServer *filter.Policy `json:"mcpServer,omitempty"`
}

// ExtensionBuilder builds the filter of a resolved ExtensionRef (one whose
// MCPServer is set), such as the MCP policy filter of its policy. The
// server calls it while it compiles a snapshot, once per distinct
// reference; an error fails Apply.
type ExtensionBuilder func(ref *ExtensionRef) (ExtensionFilter, error)

// ExtensionFilter is what an ExtensionRef filter implements, such as the
// MCP policy filter. Wrap is called once per snapshot for every rule (or
// backend) that uses the filter; the returned handler serves those requests
// and either answers itself (a rejection) or calls next to continue.
//
// The handler may replace the request body (bounded reads) and derive a new
// request, but its context must derive from the one it was given: the
// gateway keeps per-request state there. A ResponseWriter it wraps should
// implement Unwrap() http.ResponseWriter so event streams can be flushed.
type ExtensionFilter interface {
	Wrap(next http.Handler) http.Handler
}

// ResourceMetadataServer is an ExtensionFilter that protects its rules as
// an OAuth protected resource and describes them in RFC 9728 metadata, as
// the MCP policy filter does for an MCPServer with auth. The gateway serves
// GET /.well-known/oauth-protected-resource/PATH with the filter of the
// rule that a request to PATH on the same host would reach (and the root
// form, without PATH, when one such rule is all a host has), passing the
// resource URL it derived: the listener's scheme, the Host and PATH.
type ResourceMetadataServer interface {
	ServeResourceMetadata(w http.ResponseWriter, r *http.Request, resource string)
}

// Backend is one weighted backendRef of a rule.
type Backend struct {
	// Name identifies the backend in logs and /config, for example
	// "team-a/github-mcp:8080".
	Name string `json:"name"`
	// Weight is the backend's share: weight / sum of weights. Zero means the
	// backend never receives traffic, including existing MCP sessions. The
	// translator applies the spec's default of 1. JSON always shows it:
	// zero is meaningful.
	Weight int32 `json:"weight"`
	// Endpoints are the ready endpoints as "ip:port". None answers 503.
	Endpoints []string `json:"endpoints,omitempty"`
	// Scheme is "http" (the default when empty) or "https".
	Scheme string `json:"scheme,omitempty"`
	// Invalid marks a backendRef that could not be resolved; its share of
	// requests answers 500.
	Invalid bool `json:"invalid,omitempty"`
	// Filters run only for requests sent to this backend, after the rule's
	// filters.
	Filters []Filter `json:"filters,omitempty"`
	// EndpointPath, when set, is the path every request sent to this
	// backend goes to: the one endpoint of an MCP server (MCPServer
	// spec.path), whatever path the client used. The query is kept.
	EndpointPath string `json:"endpointPath,omitempty"`
	// EndpointPathGETOnly sends only GET requests to EndpointPath: in the
	// legacy HTTP+SSE transport GET opens the event stream there, and
	// messages are POSTed to the path the server announced in it.
	EndpointPathGETOnly bool `json:"endpointPathGETOnly,omitempty"`
	// TLS, when set, is how the gateway connects to the backend over TLS
	// (a BackendTLSPolicy); Scheme must then be "https" or empty.
	TLS *BackendTLS `json:"tls,omitempty"`
	// Protocol is BackendProtocolH2C for a backend that speaks HTTP/2
	// without TLS (a Service port's appProtocol kubernetes.io/h2c); empty
	// for HTTP/1.1 (or HTTP/2 negotiated over TLS).
	Protocol string `json:"protocol,omitempty"`
}

// BackendProtocolH2C is Backend.Protocol for HTTP/2 over cleartext TCP,
// with prior knowledge.
const BackendProtocolH2C = "h2c"

// BackendTLS says how the gateway connects to a backend over TLS and
// verifies its certificate: a BackendTLSPolicy, resolved.
//
// The gateway sends ServerName as SNI and verifies the backend's chain
// against CACertificatesPEM or, with SystemRoots, the system's roots.
// Without SubjectAltNames the certificate must hold ServerName; with them,
// it must hold one of them and ServerName is not checked. A BackendTLS
// with neither CACertificatesPEM nor SystemRoots has no valid CA
// certificate: the backend's requests answer 500 and nothing is dialed.
type BackendTLS struct {
	// Policy names the BackendTLSPolicy, "namespace/name", for logs,
	// errors and /config.
	Policy string `json:"policy,omitempty"`
	// ServerName is the SNI, and the name the certificate must hold when
	// there are no SubjectAltNames.
	ServerName string `json:"serverName"`
	// CACertificatesPEM are the certificates that may sign the backend's
	// chain, PEM, one after the other. Public: never redacted.
	CACertificatesPEM string `json:"caCertificatesPEM,omitempty"`
	// SystemRoots trusts the system's roots instead.
	SystemRoots bool `json:"systemRoots,omitempty"`
	// SubjectAltNames, when set, are the names of which the certificate
	// must hold one.
	SubjectAltNames []SubjectAltName `json:"subjectAltNames,omitempty"`
}

// SubjectAltName is one name a backend's certificate may hold: a DNS name
// (Hostname, a leading "*." in the certificate matching one label) or a
// URI (URI, such as a SPIFFE id, compared exactly).
type SubjectAltName struct {
	Hostname string `json:"hostname,omitempty"`
	URI      string `json:"uri,omitempty"`
}

// ClientValidation is how an HTTPS listener verifies client certificates.
type ClientValidation struct {
	// CACertificatesPEM are the CA certificates a client certificate must
	// chain to.
	CACertificatesPEM string `json:"caCertificatesPEM"`
	// AllowInsecureFallback lets clients connect whose certificate is
	// missing or does not verify; by default the handshake fails for them.
	AllowInsecureFallback bool `json:"allowInsecureFallback,omitempty"`
}
