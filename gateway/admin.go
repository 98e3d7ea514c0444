package gateway

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/netip"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/toolgate/toolgate/filter"
)

// AdminHandler serves the admin endpoints, separate from the gateway's
// listeners:
//
//	GET /healthz  200 while the process serves
//	GET /readyz   200 once a configuration is loaded, naming its version
//	              (Config.Version) when it has one; 503 before and during
//	              shutdown
//	GET /metrics  Prometheus metrics
//	GET /config   the current snapshot in its wire form (EncodeConfig),
//	              indented, of Config.Redacted: without private keys and
//	              with header and query parameter values redacted;
//	              loopback clients only unless Options.AllowRemoteConfig
//	GET /limits?server=NAMESPACE/NAME&user=USER
//	              what remains in each bucket of that MCP server that applies
//	              to the user's calls (the global ones alone without user),
//	              read from the store without taking anything
//	              (Options.Budgets); loopback clients only, as /config
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
		msg := "ready"
		if snap := s.snap.Load(); snap != nil && snap.config.Version != "" {
			msg = "ready: configuration version " + snap.config.Version
		}
		writeError(w, http.StatusOK, msg)
	}).Methods(http.MethodGet, http.MethodHead)
	r.Handle("/metrics", promhttp.HandlerFor(s.metrics.registry, promhttp.HandlerOpts{})).
		Methods(http.MethodGet, http.MethodHead)
	r.HandleFunc("/config", s.serveConfig).Methods(http.MethodGet)
	r.HandleFunc("/limits", s.serveLimits).Methods(http.MethodGet)
	return r
}

func (s *Server) serveLimits(w http.ResponseWriter, r *http.Request) {
	if s.opts.Budgets == nil {
		writeError(w, http.StatusNotFound, "this gateway does not read limits")
		return
	}
	if !s.opts.AllowRemoteConfig && !isLoopbackClient(r) {
		writeError(w, http.StatusForbidden, "/limits is answered to loopback clients only: query it from the gateway's host, or through kubectl port-forward to its admin port")
		return
	}
	server, user := r.URL.Query().Get("server"), r.URL.Query().Get("user")
	if server == "" {
		writeError(w, http.StatusBadRequest, "name the MCP server: /limits?server=NAMESPACE/NAME&user=USER")
		return
	}
	snap := s.snap.Load()
	if snap == nil {
		writeError(w, http.StatusServiceUnavailable, "no configuration loaded")
		return
	}
	var policy *filter.Policy
	for p := range snap.config.MCPServers() {
		if p.Server == server {
			policy = p
			break
		}
	}
	if policy == nil {
		writeError(w, http.StatusNotFound, "no route of this gateway applies MCP server "+server)
		return
	}
	budgets, err := s.opts.Budgets(r.Context(), policy, user)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "the limits could not be read: "+err.Error())
		return
	}
	data, err := json.MarshalIndent(budgets, "", "  ")
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(append(data, '\n'))
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
	// The Config's wire form, redacted and indented for a reader.
	data, err := EncodeConfig(snap.config.Redacted())
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	var out bytes.Buffer
	_ = json.Indent(&out, data, "", "  ") // data is valid JSON
	out.WriteByte('\n')
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(out.Bytes())
}

// isLoopbackClient reports whether r came over a connection from a loopback
// address. It reads the connection's address only: forwarding headers are
// the client's own claim.
func isLoopbackClient(r *http.Request) bool {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	return err == nil && ap.Addr().Unmap().IsLoopback()
}
