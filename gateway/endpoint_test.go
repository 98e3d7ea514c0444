package gateway

import (
	"net/http"
	"strings"
	"testing"
)

func TestAnMCPBackendReceivesRequestsAtItsEndpoint(t *testing.T) {
	echo := echoBackend(t, "b")
	streamable := backendOf("streamable", 1, echo)
	streamable.EndpointPath = "/v1/mcp"
	legacy := backendOf("legacy", 1, echo)
	legacy.EndpointPath, legacy.EndpointPathGETOnly = "/sse", true
	s := newServer(t, Options{})
	mustApply(t, s, oneRoute(
		Rule{Matches: []Match{{Path: prefix("/github")}}, Backends: []Backend{streamable}},
		Rule{Matches: []Match{{Path: prefix("/legacy")}}, Backends: []Backend{legacy}},
	))
	base := gatewayURL(t, s, "web")
	tests := []struct {
		method, path string
		wantPath     string
		wantQuery    string
	}{
		{method: http.MethodPost, path: "/github", wantPath: "/v1/mcp"},
		{method: http.MethodGet, path: "/github/anything?x=1", wantPath: "/v1/mcp", wantQuery: "x=1"},
		{method: http.MethodDelete, path: "/github", wantPath: "/v1/mcp"},
		{method: http.MethodGet, path: "/legacy", wantPath: "/sse"},
		{method: http.MethodPost, path: "/legacy/message?sessionId=abc", wantPath: "/legacy/message", wantQuery: "sessionId=abc"},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			req, err := http.NewRequest(tt.method, base+tt.path, strings.NewReader(""))
			if err != nil {
				t.Fatal(err)
			}
			res, body := do(t, req)
			if res.StatusCode != http.StatusOK {
				t.Fatalf("status %d: %s", res.StatusCode, body)
			}
			got := decodeEcho(t, body)
			if got.Path != tt.wantPath || got.RawQuery != tt.wantQuery {
				t.Errorf("the backend saw %s?%s, want %s?%s", got.Path, got.RawQuery, tt.wantPath, tt.wantQuery)
			}
		})
	}
}

func TestAnEndpointPathMustBeAbsolute(t *testing.T) {
	b := backendOf("b", 1, echoBackend(t, "b"))
	b.EndpointPath = "mcp"
	s := newServer(t, Options{})
	if err := s.Apply(oneRoute(Rule{Matches: []Match{{Path: prefix("/")}}, Backends: []Backend{b}})); err == nil || !strings.Contains(err.Error(), "must start with /") {
		t.Errorf("Apply = %v, want an error about the endpoint path", err)
	}
}
