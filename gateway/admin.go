package gateway

import (
	"crypto/x509"
	"encoding/json"
	"net/http"
	"net/netip"
	"time"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// AdminHandler serves the admin endpoints, separate from the gateway's
// listeners:
//
//	GET /healthz  200 while the process serves
//	GET /readyz   200 once a configuration is loaded, 503 before and
//	              during shutdown
//	GET /metrics  Prometheus metrics
//	GET /config   the current snapshot as JSON, read-only, without keys
//	              and with header and query parameter values redacted;
//	              loopback clients only unless Options.AllowRemoteConfig
//
// A fixed table of exact paths and methods is what gorilla/mux does well,
// so it routes here unchanged.
func (s *Server) AdminHandler() http.Handler {
	r := mux.NewRouter()
	r.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeError(w, http.StatusOK, "ok")
	}).Methods(http.MethodGet, http.MethodHead)
	r.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !s.Ready() {
			writeError(w, http.StatusServiceUnavailable, "not ready: no configuration loaded or shutting down")
			return
		}
		writeError(w, http.StatusOK, "ready")
	}).Methods(http.MethodGet, http.MethodHead)
	r.Handle("/metrics", promhttp.HandlerFor(s.metrics.registry, promhttp.HandlerOpts{})).
		Methods(http.MethodGet, http.MethodHead)
	r.HandleFunc("/config", s.serveConfig).Methods(http.MethodGet)
	return r
}

func (s *Server) serveConfig(w http.ResponseWriter, r *http.Request) {
	if !s.opts.AllowRemoteConfig && !isLoopbackClient(r) {
		writeError(w, http.StatusForbidden, "/config is answered to loopback clients only: query it from the gateway's host, or through kubectl port-forward to its admin port")
		return
	}
	snap := s.snap.Load()
	if snap == nil {
		writeError(w, http.StatusServiceUnavailable, "no configuration loaded")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(newConfigView(snap.config))
}

// isLoopbackClient reports whether r came over a connection from a loopback
// address. It reads the connection's address only: forwarding headers are
// the client's own claim.
func isLoopbackClient(r *http.Request) bool {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	return err == nil && ap.Addr().Unmap().IsLoopback()
}

// redacted replaces every header and query parameter value in /config:
// a RequestHeaderModifier may inject a credential for the backend, and a
// header or query parameter match may test for one.
const redacted = "[redacted]"

// The /config view mirrors Config with JSON names, leaving out private keys,
// showing certificates by their names and expiry, and header and query
// parameter values as [redacted] (their names are kept).
type (
	configView struct {
		Listeners []listenerView `json:"listeners"`
	}
	listenerView struct {
		Name         string            `json:"name"`
		Address      string            `json:"address,omitempty"`
		Port         int               `json:"port"`
		Protocol     Protocol          `json:"protocol"`
		Hostname     string            `json:"hostname,omitempty"`
		Certificates []certificateView `json:"certificates,omitempty"`
		VirtualHosts []virtualHostView `json:"virtualHosts"`
	}
	certificateView struct {
		DNSNames []string  `json:"dnsNames,omitempty"`
		NotAfter time.Time `json:"notAfter,omitzero"`
	}
	virtualHostView struct {
		Hostnames []string    `json:"hostnames,omitempty"`
		Routes    []routeView `json:"routes"`
	}
	routeView struct {
		Namespace         string     `json:"namespace"`
		Name              string     `json:"name"`
		CreationTimestamp time.Time  `json:"creationTimestamp"`
		Rules             []ruleView `json:"rules"`
	}
	ruleView struct {
		Name     string        `json:"name,omitempty"`
		Matches  []Match       `json:"matches,omitempty"`
		Filters  []filterView  `json:"filters,omitempty"`
		Backends []backendView `json:"backends,omitempty"`
		Timeouts *timeoutsView `json:"timeouts,omitempty"`
	}
	timeoutsView struct {
		Request        string `json:"request,omitempty"`
		BackendRequest string `json:"backendRequest,omitempty"`
	}
	filterView struct {
		Type                   FilterType        `json:"type"`
		RequestHeaderModifier  *HeaderModifier   `json:"requestHeaderModifier,omitempty"`
		ResponseHeaderModifier *HeaderModifier   `json:"responseHeaderModifier,omitempty"`
		RequestRedirect        *Redirect         `json:"requestRedirect,omitempty"`
		URLRewrite             *URLRewrite       `json:"urlRewrite,omitempty"`
		ExtensionRef           *extensionRefView `json:"extensionRef,omitempty"`
	}
	extensionRefView struct {
		Group    string `json:"group"`
		Kind     string `json:"kind"`
		Name     string `json:"name"`
		Resolved bool   `json:"resolved"`
	}
	backendView struct {
		Name                string       `json:"name"`
		Weight              int32        `json:"weight"`
		Scheme              string       `json:"scheme,omitempty"`
		Endpoints           []string     `json:"endpoints"`
		EndpointPath        string       `json:"endpointPath,omitempty"`
		EndpointPathGETOnly bool         `json:"endpointPathGETOnly,omitempty"`
		Invalid             bool         `json:"invalid,omitempty"`
		Filters             []filterView `json:"filters,omitempty"`
	}
)

func newConfigView(cfg *Config) configView {
	v := configView{Listeners: []listenerView{}}
	for _, l := range cfg.Listeners {
		lv := listenerView{Name: l.Name, Address: l.Address, Port: l.Port, Protocol: l.Protocol, Hostname: l.Hostname, VirtualHosts: []virtualHostView{}}
		for _, c := range l.Certificates {
			lv.Certificates = append(lv.Certificates, newCertificateView(c.Leaf, c.Certificate))
		}
		for _, vh := range l.VirtualHosts {
			vv := virtualHostView{Hostnames: vh.Hostnames, Routes: []routeView{}}
			for _, r := range vh.Routes {
				rv := routeView{Namespace: r.Namespace, Name: r.Name, CreationTimestamp: r.CreationTimestamp, Rules: []ruleView{}}
				for _, rule := range r.Rules {
					rv.Rules = append(rv.Rules, newRuleView(rule))
				}
				vv.Routes = append(vv.Routes, rv)
			}
			lv.VirtualHosts = append(lv.VirtualHosts, vv)
		}
		v.Listeners = append(v.Listeners, lv)
	}
	return v
}

func newCertificateView(leaf *x509.Certificate, chain [][]byte) certificateView {
	if leaf == nil && len(chain) > 0 {
		leaf, _ = x509.ParseCertificate(chain[0])
	}
	if leaf == nil {
		return certificateView{}
	}
	return certificateView{DNSNames: leaf.DNSNames, NotAfter: leaf.NotAfter}
}

func newRuleView(rule Rule) ruleView {
	rv := ruleView{Name: rule.Name, Matches: redactMatches(rule.Matches), Filters: newFilterViews(rule.Filters)}
	for _, b := range rule.Backends {
		rv.Backends = append(rv.Backends, backendView{
			Name: b.Name, Weight: b.Weight, Scheme: b.Scheme, Endpoints: b.Endpoints,
			EndpointPath: b.EndpointPath, EndpointPathGETOnly: b.EndpointPathGETOnly,
			Invalid: b.Invalid, Filters: newFilterViews(b.Filters),
		})
	}
	if t := rule.Timeouts; t.Request > 0 || t.BackendRequest > 0 {
		rv.Timeouts = &timeoutsView{}
		if t.Request > 0 {
			rv.Timeouts.Request = t.Request.String()
		}
		if t.BackendRequest > 0 {
			rv.Timeouts.BackendRequest = t.BackendRequest.String()
		}
	}
	return rv
}

func newFilterViews(filters []Filter) []filterView {
	var out []filterView
	for _, f := range filters {
		fv := filterView{
			Type:                   f.Type,
			RequestHeaderModifier:  redactHeaderModifier(f.RequestHeaderModifier),
			ResponseHeaderModifier: redactHeaderModifier(f.ResponseHeaderModifier),
			RequestRedirect:        f.RequestRedirect,
			URLRewrite:             f.URLRewrite,
		}
		if ref := f.ExtensionRef; ref != nil {
			fv.ExtensionRef = &extensionRefView{Group: ref.Group, Kind: ref.Kind, Name: ref.Name, Resolved: ref.Filter != nil}
		}
		out = append(out, fv)
	}
	return out
}

// redactMatches copies matches with their header and query parameter values
// redacted.
func redactMatches(matches []Match) []Match {
	if matches == nil {
		return nil
	}
	out := make([]Match, len(matches))
	for i, m := range matches {
		out[i] = Match{Path: m.Path, Method: m.Method}
		for _, h := range m.Headers {
			out[i].Headers = append(out[i].Headers, HeaderMatch{Type: h.Type, Name: h.Name, Value: redacted})
		}
		for _, q := range m.QueryParams {
			out[i].QueryParams = append(out[i].QueryParams, QueryParamMatch{Type: q.Type, Name: q.Name, Value: redacted})
		}
	}
	return out
}

// redactHeaderModifier copies a header modifier with its values redacted.
func redactHeaderModifier(m *HeaderModifier) *HeaderModifier {
	if m == nil {
		return nil
	}
	out := &HeaderModifier{Remove: m.Remove}
	for _, h := range m.Set {
		out.Set = append(out.Set, Header{Name: h.Name, Value: redacted})
	}
	for _, h := range m.Add {
		out.Add = append(out.Add, Header{Name: h.Name, Value: redacted})
	}
	return out
}
