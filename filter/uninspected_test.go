package filter_test

import (
	"bytes"
	"compress/gzip"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/toolgate/toolgate/filter"
)

// Nothing the filter cannot read reaches the backend: upgrades, bodies in
// an encoding or charset it does not decode, names a backend may read as
// another. What it forwards is what it inspected.
func TestWhatTheFilterCannotInspectIsRefused(t *testing.T) {
	var gzipped bytes.Buffer
	zw := gzip.NewWriter(&gzipped)
	_, _ = zw.Write([]byte(call(1, "expensive_tool")))
	_ = zw.Close()

	post := func(body string, headers ...string) *http.Request {
		r := httptest.NewRequest(http.MethodPost, "/mcp", strings.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		for i := 0; i+1 < len(headers); i += 2 {
			r.Header.Set(headers[i], headers[i+1])
		}
		return r
	}
	withHeaders := func(method string, headers ...string) *http.Request {
		r := httptest.NewRequest(method, "/mcp", nil)
		for i := 0; i+1 < len(headers); i += 2 {
			r.Header.Set(headers[i], headers[i+1])
		}
		return r
	}
	tests := []struct {
		name       string
		request    *http.Request
		wantStatus int
		wantCode   int    // the JSON-RPC code of a refusal
		wantText   string // in the refusal's message
	}{
		{"a POST asking for a WebSocket", post(call(1, "t"), "Connection", "Upgrade", "Upgrade", "websocket"), 400, filter.CodeInvalidRequest, "does not upgrade"},
		{"a GET asking for h2c", withHeaders(http.MethodGet, "Connection", "upgrade, HTTP2-Settings", "Upgrade", "h2c"), 400, filter.CodeInvalidRequest, "does not upgrade"},
		{"an Upgrade header alone", withHeaders(http.MethodGet, "Upgrade", "websocket"), 400, filter.CodeInvalidRequest, "does not upgrade"},
		{"a CORS preflight asking for an upgrade", withHeaders(http.MethodOptions, "Origin", "https://app.example", "Access-Control-Request-Method", "POST", "Connection", "Upgrade", "Upgrade", "websocket"), 400, filter.CodeInvalidRequest, "does not upgrade"},
		{"a gzip body", post(gzipped.String(), "Content-Encoding", "gzip"), 415, filter.CodeInvalidRequest, `Content-Encoding "gzip"`},
		{"a plain body labelled gzip", post(call(1, "t"), "Content-Encoding", "gzip"), 415, filter.CodeInvalidRequest, `Content-Encoding "gzip"`},
		{"a body labelled identity, then br", post(call(1, "t"), "Content-Encoding", "identity, br"), 415, filter.CodeInvalidRequest, `Content-Encoding "br"`},
		{"an ASCII body labelled utf-16", post(call(1, "t"), "Content-Type", "application/json; charset=utf-16"), 415, filter.CodeInvalidRequest, `charset "utf-16"`},
		{"a body labelled latin-1", post(call(1, "t"), "Content-Type", "application/json;charset=ISO-8859-1"), 415, filter.CodeInvalidRequest, `charset "ISO-8859-1"`},
		{"a Content-Type that Connection drops", post(call(1, "t"), "Connection", "Content-Type"), 415, filter.CodeInvalidRequest, "Content-Type must be application/json"},
		{"a tool name ending in NUL", post(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"expensive_tool\u0000"}}`), 400, filter.CodeInvalidRequest, "control characters"},
		{"a tool name with DEL", post(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"expensive\u007ftool"}}`), 400, filter.CodeInvalidRequest, "control characters"},
		{"a tool name with a C1 control", post(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"expensive_tool\u0085"}}`), 400, filter.CodeInvalidRequest, "control characters"},
		{"a tool name with a raw tab", post("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"expensive_tool\\t\"}}"), 400, filter.CodeInvalidRequest, "control characters"},
		{"UTF-8 said in capitals", post(call(1, "t"), "Content-Type", "Application/JSON; charset=UTF-8"), 200, 0, ""},
		{"identity encoding", post(call(1, "t"), "Content-Encoding", "identity"), 200, 0, ""},
		{"a tool name in another script", post(call(1, "outil_coûteux")), 200, 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, filter.Policy{Server: testServer, Global: limit(100, time.Hour)})
			w := h.serve(tt.request)
			if w.Code != tt.wantStatus {
				t.Fatalf("status %d, want %d: %s", w.Code, tt.wantStatus, w.Body.String())
			}
			if tt.wantStatus == http.StatusOK {
				if h.backend.hits.Load() != 1 {
					t.Errorf("the backend saw %d requests, want 1", h.backend.hits.Load())
				}
				return
			}
			if got := h.backend.hits.Load(); got != 0 {
				t.Errorf("the backend saw %d requests, want none", got)
			}
			resp := decodeError(t, w)
			if resp.Error.Code != tt.wantCode || !strings.Contains(resp.Error.Message, tt.wantText) {
				t.Errorf("error %d %q, want %d with %q", resp.Error.Code, resp.Error.Message, tt.wantCode, tt.wantText)
			}
		})
	}
}

// A header that Connection names stops at the gateway, so the filter never
// decides on a header the backend does not get: here an Mcp-Method that
// disagrees with the body, which the backend never sees.
func TestTheRequestForwardedIsTheRequestInspected(t *testing.T) {
	h := newHarness(t, filter.Policy{Server: testServer, Global: limit(100, time.Hour)})
	w := h.post("", call(1, "t"), "Connection", "Mcp-Method, X-Hop", "Mcp-Method", "tools/list", "X-Hop", "1", "X-Kept", "1")
	if w.Code != http.StatusOK {
		t.Fatalf("status %d: %s", w.Code, w.Body.String())
	}
	got := h.backend.lastHeader()
	for _, name := range []string{"Mcp-Method", "X-Hop"} {
		if v := got.Values(name); len(v) > 0 {
			t.Errorf("the backend got %s %q, which Connection named", name, v)
		}
	}
	if got.Get("X-Kept") != "1" || got.Get("Content-Type") != "application/json" {
		t.Errorf("the backend's headers %v lost what Connection did not name", got)
	}
}

// A CORS preflight passes without a token, and never carries one to the
// backend unless the server forwards tokens.
func TestAPreflightNeverCarriesTheCallersTokenToTheBackend(t *testing.T) {
	iss := newIssuer(t)
	for _, forward := range []bool{false, true} {
		h := newHarness(t, filter.Policy{Server: testServer, Auth: iss.auth(), ForwardAuthorization: forward})
		r := httptest.NewRequest(http.MethodOptions, "/mcp", nil)
		r.Header.Set("Origin", "https://app.example")
		r.Header.Set("Access-Control-Request-Method", "POST")
		r.Header.Set("Authorization", "Bearer "+iss.token(t, "alice"))
		if w := h.serve(r); w.Code != http.StatusOK {
			t.Fatalf("forward %v: preflight status %d, want the backend's 200", forward, w.Code)
		}
		got := h.backend.lastHeader().Get("Authorization")
		if forward != (got != "") {
			t.Errorf("forwardAuthorization %v: the backend got Authorization %q", forward, got)
		}
	}
}
