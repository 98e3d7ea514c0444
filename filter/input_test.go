package filter_test

import (
	"bytes"
	"encoding/base64"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/toolgate/toolgate/filter"
)

func TestBadInputIsAnsweredAndNotForwarded(t *testing.T) {
	const maxBody = 1024
	big := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{"x":"` + strings.Repeat("a", maxBody) + `"}}}`
	tests := []struct {
		name        string
		body        string
		contentType string
		headers     []string
		unsized     bool // sent without a Content-Length, as a chunked body is
		status      int
		code        int
		id          string
	}{
		{name: "malformed JSON", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call",`, status: 400, code: filter.CodeParseError, id: "null"},
		{name: "not JSON at all", body: `tools/call expensive_tool`, status: 400, code: filter.CodeParseError, id: "null"},
		{name: "an invalid request", body: `{"jsonrpc":"1.0","id":1,"method":"tools/call","params":{"name":"t"}}`, status: 400, code: filter.CodeInvalidRequest, id: "null"},
		{name: "a tools/call without a tool name", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}}`, status: 400, code: filter.CodeInvalidRequest, id: "null"},
		{name: "an empty batch", body: `[]`, status: 400, code: filter.CodeInvalidRequest, id: "null"},
		{name: "a duplicate method", body: `{"jsonrpc":"2.0","id":1,"method":"ping","method":"tools/call","params":{"name":"t"}}`, status: 400, code: filter.CodeInvalidRequest, id: "null"},
		{name: "a case-variant method", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","METHOD":"ping","params":{"name":"t"}}`, status: 400, code: filter.CodeInvalidRequest, id: "null"},
		{name: "a case-variant tool name", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","Name":"b"}}`, status: 400, code: filter.CodeInvalidRequest, id: "null"},
		{name: "a duplicate params", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"},"params":{"name":"b"}}`, status: 400, code: filter.CodeInvalidRequest, id: "null"},
		{name: "a batch hiding a case-variant key", body: `[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"Method":"tools/call","params":{"name":"t"}}]`, status: 400, code: filter.CodeInvalidRequest, id: "null"},
		{name: "a body over the limit", body: big, status: 413, code: filter.CodeInvalidRequest, id: "null"},
		{name: "a body over the limit without a Content-Length", body: big, unsized: true, status: 413, code: filter.CodeInvalidRequest, id: "null"},
		{name: "a body that is not JSON by its Content-Type", body: call(1, "t"), contentType: "text/plain", status: 415, code: filter.CodeInvalidRequest, id: "null"},
		{name: "an Mcp-Method header that disagrees with the body", body: call(7, "expensive_tool"), headers: []string{"Mcp-Method", "tools/list"}, status: 400, code: filter.CodeHeaderMismatch, id: "7"},
		{name: "an Mcp-Name header that disagrees with the body", body: call(8, "expensive_tool"), headers: []string{"Mcp-Method", "tools/call", "Mcp-Name", "other_tool"}, status: 400, code: filter.CodeHeaderMismatch, id: "8"},
		{name: "an Mcp-Name header alone that disagrees with the body", body: call(9, "expensive_tool"), headers: []string{"Mcp-Name", "other_tool"}, status: 400, code: filter.CodeHeaderMismatch, id: "9"},
		{name: "an Mcp-Name header that disagrees with a prompt's name", body: `{"jsonrpc":"2.0","id":10,"method":"prompts/get","params":{"name":"review"}}`, headers: []string{"Mcp-Method", "prompts/get", "Mcp-Name", "summarize"}, status: 400, code: filter.CodeHeaderMismatch, id: "10"},
		{name: "an Mcp-Name header that disagrees with a resource's uri", body: `{"jsonrpc":"2.0","id":11,"method":"resources/read","params":{"uri":"file:///docs/a.md"}}`, headers: []string{"Mcp-Method", "resources/read", "Mcp-Name", "file:///etc/passwd"}, status: 400, code: filter.CodeHeaderMismatch, id: "11"},
		{name: "Mcp headers on a batch", body: `[` + call(1, "t") + `]`, headers: []string{"Mcp-Method", "tools/call", "Mcp-Name", "t"}, status: 400, code: filter.CodeHeaderMismatch, id: "null"},
		{name: "an Mcp-Method header on a response", body: `{"jsonrpc":"2.0","id":3,"result":{}}`, headers: []string{"Mcp-Method", "tools/call"}, status: 400, code: filter.CodeHeaderMismatch, id: "3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, filter.Policy{Server: testServer, Global: limit(100, time.Minute)},
				func(o *filter.SharedOptions) { o.MaxBodyBytes = maxBody })
			var body io.Reader = strings.NewReader(tt.body)
			if tt.unsized {
				body = io.MultiReader(body)
			}
			r := httptest.NewRequest(http.MethodPost, "/mcp", body)
			r.Header.Set("Content-Type", "application/json")
			if tt.contentType != "" {
				r.Header.Set("Content-Type", tt.contentType)
			}
			for i := 0; i+1 < len(tt.headers); i += 2 {
				r.Header.Set(tt.headers[i], tt.headers[i+1])
			}
			w := h.serve(r)
			if w.Code != tt.status {
				t.Fatalf("status %d, want %d: %s", w.Code, tt.status, w.Body)
			}
			resp := decodeError(t, w)
			if resp.Error.Code != tt.code {
				t.Errorf("code %d (%s), want %d", resp.Error.Code, resp.Error.Message, tt.code)
			}
			if string(resp.ID) != tt.id {
				t.Errorf("id %s, want %s", resp.ID, tt.id)
			}
			if got := h.backend.hits.Load(); got != 0 {
				t.Errorf("the backend saw the request")
			}
		})
	}
}

func TestMcpHeadersThatAgreeWithTheBodyPass(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		headers []string
	}{
		{"method and name", call(1, "expensive_tool"), []string{"Mcp-Method", "tools/call", "Mcp-Name", "expensive_tool"}},
		{"a name in base64", call(1, "expensive_tool"), []string{"Mcp-Method", "tools/call", "Mcp-Name", "=?base64?" + base64.StdEncoding.EncodeToString([]byte("expensive_tool")) + "?="}},
		{"a name the body escapes", `{"jsonrpc":"2.0","id":1,"method":"tools\/call","params":{"name":"caf\u00e9"}}`, []string{"Mcp-Method", "tools/call", "Mcp-Name", "=?base64?" + base64.StdEncoding.EncodeToString([]byte("café")) + "?="}},
		{"the method of a call that is not tools/call", `{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"p"}}`, []string{"Mcp-Method", "prompts/get", "Mcp-Name", "p"}},
		{"a resource's uri", `{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///docs/a.md"}}`, []string{"Mcp-Method", "resources/read", "Mcp-Name", "file:///docs/a.md"}},
		{"no headers, as in the session protocol", call(1, "expensive_tool"), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, filter.Policy{Server: testServer, Global: limit(100, time.Minute)})
			if w := h.post("", tt.body, tt.headers...); w.Code != http.StatusOK {
				t.Errorf("status %d, want 200: %s", w.Code, w.Body)
			}
		})
	}
}

func TestAContentTypeWithParametersIsJSON(t *testing.T) {
	h := newHarness(t, filter.Policy{Server: testServer, Global: limit(1, time.Hour)})
	for i, ct := range []string{"application/json; charset=utf-8", "Application/JSON", " application/json ;charset=UTF-8"} {
		r := httptest.NewRequest(http.MethodPost, "/mcp", strings.NewReader(call(i, "t")))
		r.Header.Set("Content-Type", ct)
		w := h.serve(r)
		// The first call passes; the next ones are inspected and limited.
		want := http.StatusTooManyRequests
		if i == 0 {
			want = http.StatusOK
		}
		if w.Code != want {
			t.Errorf("Content-Type %q: status %d, want %d", ct, w.Code, want)
		}
	}
}

func TestTheBodyReachesTheBackendByteForByte(t *testing.T) {
	bodies := []string{
		call(1, "expensive_tool"),
		" \n\t{ \"jsonrpc\" : \"2.0\" ,\"id\":\"a\\u0062\", \"method\":\"tools\\/call\",\r\n\"params\":{\"name\":\"caf\\u00e9\",\"arguments\":{\"q\":\"日本語 😀\",\"n\":-1.5e-3}}}\n\n",
		`[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{"big":"` + strings.Repeat("xyz", 100_000) + `"}}},{"jsonrpc":"2.0","method":"notifications/initialized"}]`,
		`{"jsonrpc":"2.0","id":9,"result":{"content":[]}}`,
	}
	for i, body := range bodies {
		for _, unsized := range []bool{false, true} {
			h := newHarness(t, filter.Policy{Server: testServer, Global: limit(100, time.Minute)})
			var rd io.Reader = strings.NewReader(body)
			if unsized {
				rd = io.MultiReader(rd)
			}
			r := httptest.NewRequest(http.MethodPost, "/mcp", rd)
			r.Header.Set("Content-Type", "application/json")
			w := h.serve(r)
			if w.Code != http.StatusOK {
				t.Fatalf("body %d (unsized %v): status %d: %s", i, unsized, w.Code, w.Body)
			}
			if got := h.backend.last(); !bytes.Equal(got, []byte(body)) {
				t.Errorf("body %d (unsized %v): the backend got %d bytes that differ from the %d sent", i, unsized, len(got), len(body))
			}
		}
	}
}

func TestGetAndDeleteNeedATokenButAreNotInspected(t *testing.T) {
	iss := newIssuer(t)
	h := newHarness(t, filter.Policy{Server: testServer, Auth: iss.auth(), PerUser: limit(1, time.Hour)})
	for _, method := range []string{http.MethodGet, http.MethodDelete} {
		r := httptest.NewRequest(method, "/mcp", nil)
		if w := h.serve(r); w.Code != http.StatusUnauthorized {
			t.Errorf("%s without a token: status %d, want 401", method, w.Code)
		}
		r = httptest.NewRequest(method, "/mcp", nil)
		r.Header.Set("Authorization", "Bearer "+iss.token(t, "alice"))
		if w := h.serve(r); w.Code != http.StatusOK {
			t.Errorf("%s with a token: status %d, want 200", method, w.Code)
		}
	}
	if got := h.backend.hits.Load(); got != 2 {
		t.Errorf("the backend saw %d requests, want 2", got)
	}
}

func TestCORSPreflightsPassWithoutATokenAndOtherOptionsAreNotAllowed(t *testing.T) {
	iss := newIssuer(t)
	h := newHarness(t, filter.Policy{Server: testServer, Auth: iss.auth(), PerUser: limit(1, time.Hour)})

	preflight := httptest.NewRequest(http.MethodOptions, "/mcp", nil)
	preflight.Header.Set("Origin", "https://inspector.example.com")
	preflight.Header.Set("Access-Control-Request-Method", "POST")
	if w := h.serve(preflight); w.Code != http.StatusOK {
		t.Errorf("a CORS preflight: status %d, want 200 from the backend", w.Code)
	}
	plain := httptest.NewRequest(http.MethodOptions, "/mcp", nil)
	if w := h.serve(plain); w.Code != http.StatusMethodNotAllowed {
		t.Errorf("an OPTIONS request that is not a preflight: status %d, want 405", w.Code)
	}
	withBody := httptest.NewRequest(http.MethodOptions, "/mcp", strings.NewReader(call(1, "t")))
	withBody.Header.Set("Origin", "https://inspector.example.com")
	withBody.Header.Set("Access-Control-Request-Method", "POST")
	if w := h.serve(withBody); w.Code != http.StatusMethodNotAllowed {
		t.Errorf("a preflight with a body: status %d, want 405", w.Code)
	}
	if got := h.backend.hits.Load(); got != 1 {
		t.Errorf("the backend saw %d requests, want 1", got)
	}
}
