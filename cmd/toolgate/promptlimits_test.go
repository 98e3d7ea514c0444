package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/toolgate/toolgate/filter"
	"github.com/toolgate/toolgate/internal/testgateway"
)

// refusals records the 429s an MCP client gets, with the JSON-RPC error
// code of each.
type refusals struct {
	mu    sync.Mutex
	codes []int
	token string
}

func (r *refusals) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	req.Header.Set("Authorization", "Bearer "+r.token)
	res, err := http.DefaultTransport.RoundTrip(req)
	if err != nil || res.StatusCode != http.StatusTooManyRequests {
		return res, err
	}
	body, _ := io.ReadAll(res.Body)
	_ = res.Body.Close()
	res.Body = io.NopCloser(bytes.NewReader(body))
	var msg struct {
		Error struct{ Code int } `json:"error"`
	}
	_ = json.Unmarshal(body, &msg)
	r.mu.Lock()
	r.codes = append(r.codes, msg.Error.Code)
	r.mu.Unlock()
	return res, nil
}

func (r *refusals) all() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]int(nil), r.codes...)
}

// prompts/get and resources/read are limited like tools through the real
// binary, on both protocol generations: a prompt's per-user bucket, and a
// resource template whose reads cost 2; what no entry names is not limited.
func TestPromptsAndResourcesAreLimitedLikeTools(t *testing.T) {
	issuer, _ := startIssuer(t)
	for _, tc := range []struct {
		transport, version string
		code               int // the refusal's JSON-RPC code
	}{
		{"stateless", "2026-07-28", 429},
		{"stateful", "2025-11-25", -32029},
	} {
		t.Run(tc.version, func(t *testing.T) {
			backend := listsBackend(t, tc.transport)
			g := testgateway.Start(t, func(port int) string {
				return testgateway.Config(port, backend, testgateway.OIDC(issuer.URL(), issuer.JWKSURL(), "limits")+`  rateLimiting:
    prompts:
    - name: review_code
      perUser: {maxTokens: 2, refillPeriod: 1h}
    resources:
    - uri: 'file:///docs/{name}'
      cost: 2
      perUser: {maxTokens: 3, refillPeriod: 1h}
`)
			})
			token := claimsToken(t, issuer, "alice", nil)
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			seen := &refusals{token: token}
			var opts *mcp.ClientSessionOptions
			if tc.version != "2026-07-28" {
				opts = &mcp.ClientSessionOptions{ProtocolVersion: tc.version}
			}
			cs, err := mcp.NewClient(&mcp.Implementation{Name: "limits-client", Version: "v1.0.0"}, nil).
				Connect(ctx, &mcp.StreamableClientTransport{Endpoint: g.URL, HTTPClient: &http.Client{Transport: seen}}, opts)
			if err != nil {
				t.Fatalf("connect: %v", err)
			}
			defer func() { _ = cs.Close() }()
			if got := cs.InitializeResult().ProtocolVersion; got != tc.version {
				t.Fatalf("protocol %s, want %s", got, tc.version)
			}
			get := func(name string) error {
				_, err := cs.GetPrompt(ctx, &mcp.GetPromptParams{Name: name})
				return err
			}
			read := func(uri string) error {
				_, err := cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: uri})
				return err
			}
			for i, step := range []struct {
				what    string
				do      func() error
				refused bool
			}{
				{"review_code", func() error { return get("review_code") }, false},
				{"review_code", func() error { return get("review_code") }, false},
				{"review_code, over its bucket", func() error { return get("review_code") }, true},
				{"summarize, no entry", func() error { return get("summarize") }, false},
				{"summarize, no entry", func() error { return get("summarize") }, false},
				{"summarize, no entry", func() error { return get("summarize") }, false},
				{"the guide, costs 2 of 3", func() error { return read("file:///docs/guide.md") }, false},
				{"the guide again, 1 left", func() error { return read("file:///docs/guide.md") }, true},
				{"keys, no entry", func() error { return read("file:///secrets/keys.txt") }, false},
			} {
				err := step.do()
				switch {
				case step.refused && (err == nil || !strings.Contains(err.Error(), "Too Many Requests")):
					t.Errorf("step %d, %s: %v, want it refused with 429", i+1, step.what, err)
				case !step.refused && err != nil:
					t.Errorf("step %d, %s: %v", i+1, step.what, err)
				}
			}
			if codes := seen.all(); len(codes) != 2 || codes[0] != tc.code || codes[1] != tc.code {
				t.Errorf("the 429s carried JSON-RPC codes %v, want two of %d", codes, tc.code)
			}
		})
	}
}

// The same concurrent burst through the real binary: the enforcing
// gateway refuses some, the one with its limits in shadow mode serves all
// and counts as would-be refusals exactly as many as the other refused.
func TestShadowModeServesTheBurstEnforcementRefuses(t *testing.T) {
	issuer, _ := startIssuer(t)
	start := func(mode string) *testgateway.Gateway {
		backend := startBackend(t)
		return testgateway.Start(t, func(port int) string {
			return testgateway.Config(port, backend.addr, testgateway.OIDC(issuer.URL(), issuer.JWKSURL(), "limits")+`  rateLimiting:
    mode: `+mode+`
    perUser: {maxTokens: 7, refillPeriod: 1h}
    tools:
    - name: expensive_tool
      cost: 3
`)
		})
	}
	enforcing, shadow := start("Enforce"), start("Shadow")
	token := claimsToken(t, issuer, "alice", nil)
	burst := func(g *testgateway.Gateway) map[int]int {
		const calls = 20
		statuses := make(chan int, calls)
		var wg sync.WaitGroup
		// One tool, one cost: how many pass does not depend on the order
		// in which they arrive.
		for range calls {
			wg.Go(func() {
				statuses <- post(t, g.URL, token, http.MethodPost,
					`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"expensive_tool"}}`)
			})
		}
		wg.Wait()
		close(statuses)
		counts := map[int]int{}
		for s := range statuses {
			counts[s]++
		}
		return counts
	}
	enforced := burst(enforcing)
	refused := enforced[http.StatusTooManyRequests]
	if enforced[http.StatusOK] != 2 || refused != 18 {
		t.Fatalf("the enforcing gateway answered %v; want 2 served (cost 3 of 7 tokens) and 18 refused", enforced)
	}
	if shadowed := burst(shadow); shadowed[http.StatusOK] != 20 {
		t.Errorf("the shadow gateway answered %v, want 20 served", shadowed)
	}
	if got := metricSum(t, shadow, "toolgate_ratelimit_shadow_refusals_total", `server="mcp"`); got != float64(refused) {
		t.Errorf("shadow refusals %v, want %d, as many as enforcement refused", got, refused)
	}
	if got := metricSum(t, shadow, "toolgate_filter_rejected_requests_total", `reason="rate_limited"`); got != 0 {
		t.Errorf("the shadow gateway refused %v calls", got)
	}
}

// An operator reads what remains of a user's buckets from the admin
// listener, without taking anything.
func TestTheAdminListenerShowsAUsersBudgets(t *testing.T) {
	issuer, _ := startIssuer(t)
	backend := startBackend(t)
	g := testgateway.Start(t, func(port int) string {
		return testgateway.Config(port, backend.addr, testgateway.OIDC(issuer.URL(), issuer.JWKSURL(), "limits")+`  rateLimiting:
    perUser: {maxTokens: 7, refillPeriod: 1h}
    tools:
    - name: expensive_tool
      cost: 3
      global: {maxTokens: 100, refillPeriod: 1h}
`)
	})
	token := claimsToken(t, issuer, "alice", nil)
	for range 2 {
		if status := post(t, g.URL, token, http.MethodPost, `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"expensive_tool"}}`); status != http.StatusOK {
			t.Fatalf("status %d", status)
		}
	}
	read := func(query string) (int, filter.Budgets) {
		res, err := http.Get("http://" + g.Admin + "/limits?" + query)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var b filter.Budgets
		if res.StatusCode == http.StatusOK {
			if err := json.NewDecoder(res.Body).Decode(&b); err != nil {
				t.Fatal(err)
			}
		}
		return res.StatusCode, b
	}
	for range 2 { // reading takes nothing
		status, b := read("server=default/mcp&user=alice")
		if status != http.StatusOK || b.Server != "default/mcp" || b.User != "alice" || len(b.Buckets) != 2 {
			t.Fatalf("status %d, %+v", status, b)
		}
		if u := b.Buckets[0]; u.Scope != "per_user" || u.MaxTokens != 7 || u.Remaining != 1 || u.FullInMs <= 0 {
			t.Errorf("alice's bucket %+v, want 1 of 7 left (two calls of cost 3)", u)
		}
		if tool := b.Buckets[1]; tool.Scope != "tool_global" || tool.Tool != "expensive_tool" || tool.Cost != 3 || tool.Remaining != 94 {
			t.Errorf("the tool's bucket %+v, want 94 of 100 left", tool)
		}
	}
	if status, b := read("server=default/mcp"); status != http.StatusOK || len(b.Buckets) != 1 || b.Buckets[0].Scope != "tool_global" {
		t.Errorf("without a user: status %d, %+v; want the global buckets alone", status, b)
	}
	if status, _ := read("server=default/other&user=alice"); status != http.StatusNotFound {
		t.Errorf("an unknown server: status %d, want 404", status)
	}
	if status, _ := read("user=alice"); status != http.StatusBadRequest {
		t.Errorf("no server: status %d, want 400", status)
	}
	// The call that would need 3 of the 1 left is refused: nothing was
	// taken by reading.
	if status := post(t, g.URL, token, http.MethodPost, `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"expensive_tool"}}`); status != http.StatusTooManyRequests {
		t.Errorf("a third call: status %d, want 429", status)
	}
}

// A daily quota through the real binary: what it allows in its window,
// then 429 until the next midnight, naming the quota.
func TestADailyQuotaThroughTheBinary(t *testing.T) {
	issuer, _ := startIssuer(t)
	backend := startBackend(t)
	g := testgateway.Start(t, func(port int) string {
		return testgateway.Config(port, backend.addr, testgateway.OIDC(issuer.URL(), issuer.JWKSURL(), "limits")+`  rateLimiting:
    timeZone: Pacific/Auckland
    quota:
      perUser: {max: 5, window: Day}
    tools:
    - {name: expensive_tool, cost: 2}
`)
	})
	token := claimsToken(t, issuer, "alice", nil)
	call := func(tool string) *http.Response {
		req, _ := http.NewRequest(http.MethodPost, g.URL, strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"`+tool+`"}}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("Authorization", "Bearer "+token)
		res, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	for i, step := range []struct {
		tool   string
		status int
	}{{"expensive_tool", 200}, {"expensive_tool", 200}, {"expensive_tool", 429}, {"batch_tool", 200}, {"batch_tool", 429}} {
		res := call(step.tool)
		body, _ := io.ReadAll(res.Body)
		_ = res.Body.Close()
		if res.StatusCode != step.status {
			t.Fatalf("call %d (%s): status %d, want %d: %s", i+1, step.tool, res.StatusCode, step.status, body)
		}
		if step.status != http.StatusTooManyRequests {
			continue
		}
		// Until Auckland's next midnight.
		auckland, err := time.LoadLocation("Pacific/Auckland")
		if err != nil {
			t.Fatal(err)
		}
		now := time.Now().In(auckland)
		y, m, d := now.Date()
		untilMidnight := time.Date(y, m, d+1, 0, 0, 0, 0, auckland).Sub(now)
		retry, err := time.ParseDuration(res.Header.Get("Retry-After") + "s")
		if err != nil || retry < untilMidnight-time.Minute || retry > untilMidnight+time.Minute {
			t.Errorf("Retry-After %q, want about %s, until Auckland's midnight", res.Header.Get("Retry-After"), untilMidnight.Round(time.Second))
		}
		if !strings.Contains(string(body), `"limit":{"kind":"quota","scope":"quota_per_user"}`) {
			t.Errorf("the refusal does not name the quota: %s", body)
		}
	}
}
