package filter_test

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/toolgate/toolgate/filter"
	"github.com/toolgate/toolgate/filter/audit"
	"github.com/toolgate/toolgate/filter/authz"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// One record per decision, each with what it needs to say and no token.
func TestTheAuditTrailRecordsEveryDecision(t *testing.T) {
	iss := newIssuer(t)
	var out lockedBuffer
	log, err := audit.New(&out, audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	policy := filter.Policy{
		Server: testServer, Auth: iss.auth(),
		PerUser: limit(2, time.Hour),
		Authorization: &authz.Policy{Rules: []authz.Rule{
			{Name: "search", Tools: []string{"search"}},
			{Name: "team-a", Tools: []string{"create_issue"}, When: "request.arguments.repo.startsWith('team-a/')"},
		}},
	}
	h := newHarness(t, policy, func(o *filter.SharedOptions) {
		o.Audit = log
		o.Origin = func(r *http.Request) filter.Origin {
			return filter.Origin{Gateway: "gw-ns/gw", Route: "team-a/route", Client: "192.0.2.7"}
		}
	})
	token := iss.token(t, "alice")
	arguments := `{"repo":"team-a/api","secret":"s3cr3t"}`
	steps := []struct {
		token, body string
	}{
		{token, `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"create_issue","arguments":` + arguments + `}}`},
		{token, `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"launch"}}`},
		{token, `[{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"search"}},{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"launch"}}]`},
		{token, `{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"search"}}`},
		{token, `{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"search"}}`}, // the bucket held 2
		{"", `{"jsonrpc":"2.0","id":7,"method":"tools/list"}`},
	}
	for _, s := range steps {
		h.post(s.token, s.body)
	}
	get := httptest.NewRequest(http.MethodGet, "/mcp", nil)
	get.Header.Set("Authorization", "Bearer "+token)
	h.serve(get)
	if err := log.Close(); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.b.String(), token) || strings.Contains(out.b.String(), "s3cr3t") {
		t.Fatalf("the audit trail holds a token or an argument's value:\n%s", out.b.String())
	}
	var records []audit.Record
	sc := bufio.NewScanner(&out.b)
	for sc.Scan() {
		var r audit.Record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("%v: %s", err, sc.Bytes())
		}
		records = append(records, r)
	}
	sum := sha256.Sum256([]byte(arguments))
	type want struct {
		user, method, name, id, decision, reason, rule, bucket string
		status                                                 int
	}
	wants := []want{
		{"alice", "tools/call", "create_issue", "1", "allowed", "", "team-a", "", 200},
		{"alice", "tools/call", "launch", "2", "refused", "not_allowed", "", "", 200},
		{"alice", "tools/call", "search", "3", "refused", "batch", "", "", 200},
		{"alice", "tools/call", "launch", "4", "refused", "not_allowed", "", "", 200},
		{"alice", "tools/call", "search", "5", "allowed", "", "search", "", 200},
		{"alice", "tools/call", "search", "6", "refused", "rate_limited", "", "per_user", 429},
		{"", "", "", "", "refused", "unauthenticated", "", "", 401},
		{"alice", "", "", "", "allowed", "", "", "", 200},
	}
	if len(records) != len(wants) {
		t.Fatalf("%d records, want %d:\n%+v", len(records), len(wants), records)
	}
	for i, w := range wants {
		r := records[i]
		got := want{r.User, r.Method, r.Name, string(r.ID), r.Decision, r.Reason, r.Rule, r.Bucket, r.Status}
		if got != w {
			t.Errorf("record %d = %+v, want %+v", i, got, w)
		}
		if r.Server != testServer || r.Gateway != "gw-ns/gw" || r.Route != "team-a/route" || r.Client != "192.0.2.7" || r.Time.IsZero() || r.LatencyMs < 0 {
			t.Errorf("record %d: where and when: %+v", i, r)
		}
	}
	if a := records[0].Arguments; a == nil || a.Bytes != len(arguments) || a.SHA256 != hex.EncodeToString(sum[:]) || a.Value != nil {
		t.Errorf("arguments %+v, want their size and hash only", a)
	}
	if records[6].HTTPMethod != http.MethodPost || records[7].HTTPMethod != http.MethodGet {
		t.Errorf("HTTP methods %s, %s", records[6].HTTPMethod, records[7].HTTPMethod)
	}
}

// An MCP server may opt in to the arguments' values.
func TestTheAuditTrailHoldsArgumentsWhenTheServerOptsIn(t *testing.T) {
	iss := newIssuer(t)
	var out lockedBuffer
	log, err := audit.New(&out, audit.Options{Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, filter.Policy{Server: testServer, Auth: iss.auth(), AuditArguments: true}, func(o *filter.SharedOptions) { o.Audit = log })
	h.post(iss.token(t, "alice"), `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{"q":"x"}}}`)
	_ = log.Close()
	var r audit.Record
	if err := json.Unmarshal(out.b.Bytes(), &r); err != nil {
		t.Fatalf("%v: %s", err, out.b.Bytes())
	}
	if r.Arguments == nil || string(r.Arguments.Value) != `{"q":"x"}` || r.Client != "192.0.2.1" {
		t.Errorf("record %+v: want the arguments' value and the peer as client", r)
	}
}
