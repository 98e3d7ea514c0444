package filter_test

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/toolgate/toolgate/filter"
)

// callWithVersion is a tools/call whose params._meta names a protocol
// version, as 2026-07-28 clients send it.
func callWithVersion(id int, tool, version string) string {
	return `{"jsonrpc":"2.0","id":` + itoa(id) + `,"method":"tools/call","params":{"name":"` + tool +
		`","arguments":{},"_meta":{"io.modelcontextprotocol/protocolVersion":"` + version + `"}}}`
}

func itoa(i int) string {
	b, _ := json.Marshal(i)
	return string(b)
}

type rateLimitedError struct {
	ID    json.RawMessage `json:"id"`
	Error struct {
		Code int `json:"code"`
		Data struct {
			RetryAfterSeconds *int64 `json:"retryAfterSeconds"`
			RetryAfterMs      *int64 `json:"retryAfterMs"`
		} `json:"data"`
	} `json:"error"`
}

func TestEachProtocolGenerationHearsARefusalInItsOwnWords(t *testing.T) {
	tests := []struct {
		name      string
		header    string // MCP-Protocol-Version
		body      func(id int) string
		batch     bool
		stateless bool
	}{
		{name: "no version: the session-based code", body: func(id int) string { return call(id, "t") }},
		{name: "a 2025-06-18 header", header: "2025-06-18", body: func(id int) string { return call(id, "t") }},
		{name: "a 2025-11-25 header", header: "2025-11-25", body: func(id int) string { return call(id, "t") }},
		{name: "a 2026-07-28 header", header: "2026-07-28", body: func(id int) string { return call(id, "t") }, stateless: true},
		{name: "a later header", header: "2027-01-01", body: func(id int) string { return call(id, "t") }, stateless: true},
		{name: "2026-07-28 in params._meta", body: func(id int) string { return callWithVersion(id, "t", "2026-07-28") }, stateless: true},
		{name: "2025-06-18 in params._meta", body: func(id int) string { return callWithVersion(id, "t", "2025-06-18") }},
		{name: "the header wins over _meta", header: "2025-11-25", body: func(id int) string { return callWithVersion(id, "t", "2026-07-28") }},
		{name: "a batch of 2026-07-28 calls", body: func(id int) string {
			return "[" + callWithVersion(id, "t", "2026-07-28") + "," + callWithVersion(id+1000, "t", "2026-07-28") + "]"
		}, batch: true, stateless: true},
		{name: "a batch of session-based calls", body: func(id int) string {
			return "[" + call(id, "t") + "," + call(id+1000, "t") + "]"
		}, batch: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, filter.Policy{Server: testServer, Global: limit(1, time.Hour)})
			if w := h.post("", call(0, "t")); w.Code != http.StatusOK {
				t.Fatalf("the first call: status %d", w.Code)
			}
			var headers []string
			if tt.header != "" {
				headers = []string{"MCP-Protocol-Version", tt.header}
			}
			w := h.post("", tt.body(7), headers...)
			if w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") == "" {
				t.Fatalf("status %d, Retry-After %q; want 429 with Retry-After: %s", w.Code, w.Header().Get("Retry-After"), w.Body)
			}
			var errs []rateLimitedError
			if tt.batch {
				if err := json.Unmarshal(w.Body.Bytes(), &errs); err != nil || len(errs) != 2 {
					t.Fatalf("body %s: want two errors (%v)", w.Body, err)
				}
			} else {
				var one rateLimitedError
				if err := json.Unmarshal(w.Body.Bytes(), &one); err != nil {
					t.Fatalf("body %s: %v", w.Body, err)
				}
				errs = append(errs, one)
			}
			for _, e := range errs {
				want := filter.CodeRateLimited
				if tt.stateless {
					want = filter.CodeRateLimitedStateless
				}
				if e.Error.Code != want {
					t.Errorf("code %d, want %d: %s", e.Error.Code, want, w.Body)
				}
				if e.Error.Data.RetryAfterSeconds == nil || *e.Error.Data.RetryAfterSeconds < 1 {
					t.Errorf("data.retryAfterSeconds missing or below 1: %s", w.Body)
				}
				if tt.stateless != (e.Error.Data.RetryAfterMs != nil) {
					t.Errorf("data.retryAfterMs present = %v, want %v: %s", e.Error.Data.RetryAfterMs != nil, tt.stateless, w.Body)
				}
				if ms := e.Error.Data.RetryAfterMs; ms != nil && (*ms <= 0 || *ms > *e.Error.Data.RetryAfterSeconds*1000) {
					t.Errorf("data.retryAfterMs %d does not agree with retryAfterSeconds %d", *ms, *e.Error.Data.RetryAfterSeconds)
				}
			}
		})
	}
}
