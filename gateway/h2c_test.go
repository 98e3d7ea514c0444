package gateway

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
)

// A backend of protocol h2c is reached with HTTP/2 over cleartext TCP;
// others with HTTP/1.1.
func TestAnH2CBackendIsReachedWithHTTP2(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = fmt.Fprintf(w, "HTTP/%d", r.ProtoMajor) //nolint:gosec // a number, in a test backend's plain-text answer
	}))
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetHTTP1(true)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	t.Cleanup(srv.Close)

	h2c := backendOf("h2c", 1, srv)
	h2c.Protocol = BackendProtocolH2C
	s := newServer(t, Options{})
	mustApply(t, s, oneRoute(
		Rule{Matches: []Match{{Path: PathMatch{Type: PathMatchPathPrefix, Value: "/h2c"}}}, Backends: []Backend{h2c}},
		Rule{Matches: []Match{{Path: PathMatch{Type: PathMatchPathPrefix, Value: "/http1"}}}, Backends: []Backend{backendOf("http1", 1, srv)}},
	))
	for path, want := range map[string]string{"/h2c": "HTTP/2", "/http1": "HTTP/1"} {
		res, body := get(t, gatewayURL(t, s, "web")+path)
		if res.StatusCode != http.StatusOK || string(body) != want {
			t.Errorf("%s: status %d, the backend saw %q; want %s", path, res.StatusCode, body, want)
		}
	}
}

// A cleartext listener answers HTTP/2 with prior knowledge, and HTTP/1.1.
func TestAnHTTPListenerSpeaksH2CWithPriorKnowledge(t *testing.T) {
	s := newServer(t, Options{})
	mustApply(t, s, oneRoute(Rule{Backends: []Backend{backendOf("b", 1, echoBackend(t, "b"))}}))
	h2c := &http.Transport{Protocols: new(http.Protocols)}
	h2c.Protocols.SetUnencryptedHTTP2(true)
	t.Cleanup(h2c.CloseIdleConnections)
	for name, client := range map[string]*http.Client{"h2c": {Transport: h2c}, "HTTP/1.1": http.DefaultClient} {
		res, err := client.Get(gatewayURL(t, s, "web") + "/")
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		_ = res.Body.Close()
		if want := map[string]int{"h2c": 2, "HTTP/1.1": 1}[name]; res.StatusCode != http.StatusOK || res.ProtoMajor != want {
			t.Errorf("%s: status %d over HTTP/%d, want 200 over HTTP/%d", name, res.StatusCode, res.ProtoMajor, want)
		}
	}
}

func TestAnUnknownBackendProtocolIsRefused(t *testing.T) {
	b := Backend{Name: "b", Weight: 1, Endpoints: []string{"127.0.0.1:1"}, Protocol: "spdy"}
	s := newServer(t, Options{})
	if err := s.Apply(oneRoute(Rule{Backends: []Backend{b}})); err == nil {
		t.Error("Apply accepted protocol spdy")
	}
}
