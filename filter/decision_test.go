package filter_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/toolgate/toolgate/filter"
	"github.com/toolgate/toolgate/filter/limiter"
)

func TestAUserOverMaxTokensIsRejectedWithRetryAfter(t *testing.T) {
	iss := newIssuer(t)
	h := newHarness(t, filter.Policy{Server: testServer, Auth: iss.auth(), PerUser: limit(3, time.Minute)})
	alice := iss.token(t, "alice")

	for i := 1; i <= 3; i++ {
		w := h.post(alice, call(i, "other_tool"))
		if w.Code != http.StatusOK {
			t.Fatalf("call %d: status %d, want 200: %s", i, w.Code, w.Body)
		}
		if got, want := w.Header().Get("RateLimit-Policy"), `"per_user";q=3;w=60`; got != want {
			t.Errorf("call %d: RateLimit-Policy = %q, want %q", i, got, want)
		}
		if got, want := w.Header().Get("RateLimit"), fmt.Sprintf(`"per_user";r=%d;t=%d`, 3-i, 20*i); got != want {
			t.Errorf("call %d: RateLimit = %q, want %q", i, got, want)
		}
	}

	w := h.post(alice, call(4, "other_tool"))
	if w.Code != http.StatusTooManyRequests {
		t.Fatalf("call 4: status %d, want 429", w.Code)
	}
	// One token of three per minute comes back in 20s.
	if got := w.Header().Get("Retry-After"); got != "20" {
		t.Errorf("Retry-After = %q, want 20", got)
	}
	want := `{"jsonrpc":"2.0","id":4,"error":{"code":-32029,"message":"Rate limit exceeded","data":{"retryAfterSeconds":20,"limit":{"kind":"bucket","scope":"per_user"}}}}`
	if got := w.Body.String(); got != want {
		t.Errorf("body = %s\nwant   %s", got, want)
	}
	if resp := decodeError(t, w); resp.Error.Code != filter.CodeRateLimited {
		t.Errorf("code = %d, want %d", resp.Error.Code, filter.CodeRateLimited)
	}
	if got, want := w.Header().Get("RateLimit"), `"per_user";r=0;t=60`; got != want {
		t.Errorf("RateLimit = %q, want %q", got, want)
	}
	if got := h.backend.hits.Load(); got != 3 {
		t.Errorf("backend saw %d requests, want 3", got)
	}

	h.clock.Advance(20 * time.Second)
	if w := h.post(alice, call(5, "other_tool")); w.Code != http.StatusOK {
		t.Errorf("after the refill: status %d, want 200", w.Code)
	}
}

func TestRetryAfterIsRoundedUpToWholeSeconds(t *testing.T) {
	h := newHarness(t, filter.Policy{Server: testServer, Global: limit(3, 1500*time.Millisecond)})
	for i := 1; i <= 3; i++ {
		h.post("", call(i, "t"))
	}
	w := h.post("", call(4, "t"))
	if w.Code != http.StatusTooManyRequests {
		t.Fatalf("status %d, want 429", w.Code)
	}
	// A token every 0.5s: Retry-After says 1, never 0.
	if got := w.Header().Get("Retry-After"); got != "1" {
		t.Errorf("Retry-After = %q, want 1", got)
	}
	if got := decodeError(t, w).Error.Data.RetryAfterSeconds; got != 1 {
		t.Errorf("retryAfterSeconds = %d, want 1", got)
	}
}

func TestUserALimitedDoesNotLimitUserB(t *testing.T) {
	iss := newIssuer(t)
	h := newHarness(t, filter.Policy{Server: testServer, Auth: iss.auth(), PerUser: limit(2, time.Minute)})
	alice, bob := iss.token(t, "alice"), iss.token(t, "bob")

	for i := 1; i <= 2; i++ {
		if w := h.post(alice, call(i, "other_tool")); w.Code != http.StatusOK {
			t.Fatalf("alice call %d: status %d", i, w.Code)
		}
	}
	if w := h.post(alice, call(3, "other_tool")); w.Code != http.StatusTooManyRequests {
		t.Fatalf("alice call 3: status %d, want 429", w.Code)
	}
	for i := 1; i <= 2; i++ {
		if w := h.post(bob, call(i, "other_tool")); w.Code != http.StatusOK {
			t.Errorf("bob call %d while alice is limited: status %d, want 200", i, w.Code)
		}
	}
}

func TestTheLimitOnExpensiveToolDoesNotAffectOtherTool(t *testing.T) {
	iss := newIssuer(t)
	h := newHarness(t, filter.Policy{
		Server: testServer, Auth: iss.auth(),
		Tools: map[string]filter.ToolLimits{"expensive_tool": {PerUser: limit(1, time.Hour)}},
	})
	alice := iss.token(t, "alice")

	if w := h.post(alice, call(1, "expensive_tool")); w.Code != http.StatusOK {
		t.Fatalf("first expensive_tool: status %d", w.Code)
	}
	if w := h.post(alice, call(2, "expensive_tool")); w.Code != http.StatusTooManyRequests {
		t.Fatalf("second expensive_tool: status %d, want 429", w.Code)
	}
	for i := 3; i < 13; i++ {
		if w := h.post(alice, call(i, "other_tool")); w.Code != http.StatusOK {
			t.Fatalf("other_tool call %d: status %d, want 200", i, w.Code)
		}
	}
}

func TestARequestMustPassBothTheServerAndTheToolPerUserBuckets(t *testing.T) {
	serverLimit, expensiveLimit, cheapLimit := limit(3, time.Hour), limit(1, time.Hour), limit(5, time.Hour)
	policy := func(iss *testIssuer) filter.Policy {
		return filter.Policy{
			Server: testServer, Auth: iss.auth(), PerUser: serverLimit,
			Tools: map[string]filter.ToolLimits{
				"expensive_tool": {PerUser: expensiveLimit},
				"cheap_tool":     {PerUser: cheapLimit},
			},
		}
	}
	serverBucket := limiter.BucketID{Server: testServer, User: "alice"}
	cheapBucket := limiter.BucketID{Server: testServer, Tool: "cheap_tool", User: "alice"}

	t.Run("a request refused by the tool bucket takes nothing from the server bucket", func(t *testing.T) {
		iss := newIssuer(t)
		h := newHarness(t, policy(iss))
		alice := iss.token(t, "alice")
		if w := h.post(alice, call(1, "expensive_tool")); w.Code != http.StatusOK {
			t.Fatalf("first expensive_tool: status %d", w.Code)
		}
		w := h.post(alice, call(2, "expensive_tool"))
		if w.Code != http.StatusTooManyRequests {
			t.Fatalf("second expensive_tool: status %d, want 429", w.Code)
		}
		if got, want := w.Header().Get("RateLimit-Policy"), `"tool_per_user";q=1;w=3600, "per_user";q=3;w=3600`; got != want {
			t.Errorf("RateLimit-Policy = %q, want %q (the refusing bucket first)", got, want)
		}
		// 3 - 1 = 2 tokens are left in the server bucket.
		if !h.bucketHolds(t, serverBucket, *serverLimit, 2) {
			t.Errorf("the refused request took a token from the server bucket")
		}
	})

	t.Run("a request refused by the server bucket takes nothing from the tool bucket", func(t *testing.T) {
		iss := newIssuer(t)
		h := newHarness(t, policy(iss))
		alice := iss.token(t, "alice")
		for i := 1; i <= 3; i++ {
			if w := h.post(alice, call(i, "other_tool")); w.Code != http.StatusOK {
				t.Fatalf("other_tool call %d: status %d", i, w.Code)
			}
		}
		w := h.post(alice, call(4, "cheap_tool"))
		if w.Code != http.StatusTooManyRequests {
			t.Fatalf("cheap_tool with the server bucket empty: status %d, want 429", w.Code)
		}
		if got, want := w.Header().Get("RateLimit-Policy"), `"per_user";q=3;w=3600, "tool_per_user";q=5;w=3600`; got != want {
			t.Errorf("RateLimit-Policy = %q, want %q (the refusing bucket first)", got, want)
		}
		if !h.bucketHolds(t, cheapBucket, *cheapLimit, 5) {
			t.Errorf("the refused request took a token from the cheap_tool bucket")
		}
	})

	t.Run("a request that passes both takes from both", func(t *testing.T) {
		iss := newIssuer(t)
		h := newHarness(t, policy(iss))
		alice := iss.token(t, "alice")
		if w := h.post(alice, call(1, "cheap_tool")); w.Code != http.StatusOK {
			t.Fatalf("cheap_tool: status %d", w.Code)
		}
		if h.bucketHolds(t, serverBucket, *serverLimit, 3) {
			t.Errorf("the server bucket is still full")
		}
		if h.bucketHolds(t, cheapBucket, *cheapLimit, 5) {
			t.Errorf("the cheap_tool bucket is still full")
		}
	})
}

func TestGlobalBucketsAreSharedByEveryCaller(t *testing.T) {
	iss := newIssuer(t)
	h := newHarness(t, filter.Policy{
		Server: testServer, Auth: iss.auth(), Global: limit(10, time.Hour),
		Tools: map[string]filter.ToolLimits{"expensive_tool": {Global: limit(2, time.Hour)}},
	})
	alice, bob := iss.token(t, "alice"), iss.token(t, "bob")
	if w := h.post(alice, call(1, "expensive_tool")); w.Code != http.StatusOK {
		t.Fatalf("alice: status %d", w.Code)
	}
	if w := h.post(bob, call(2, "expensive_tool")); w.Code != http.StatusOK {
		t.Fatalf("bob: status %d", w.Code)
	}
	w := h.post(iss.token(t, "carol"), call(3, "expensive_tool"))
	if w.Code != http.StatusTooManyRequests {
		t.Fatalf("carol after two calls by others: status %d, want 429", w.Code)
	}
	if got, want := w.Header().Get("RateLimit-Policy"), `"tool_global";q=2;w=3600, "global";q=10;w=3600`; got != want {
		t.Errorf("RateLimit-Policy = %q, want %q", got, want)
	}
}

func TestABatchTakesATokenForEveryToolCallAllOrNothing(t *testing.T) {
	iss := newIssuer(t)
	h := newHarness(t, filter.Policy{
		Server: testServer, Auth: iss.auth(),
		Tools: map[string]filter.ToolLimits{"expensive_tool": {PerUser: limit(3, time.Hour)}},
	})
	alice := iss.token(t, "alice")

	// A call, a notification that calls the tool too, and a ping: 2 tokens.
	first := `[
		{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"expensive_tool"}},
		{"jsonrpc":"2.0","method":"tools/call","params":{"name":"expensive_tool"}},
		{"jsonrpc":"2.0","id":"p","method":"ping"}]`
	if w := h.post(alice, first); w.Code != http.StatusOK {
		t.Fatalf("first batch: status %d: %s", w.Code, w.Body)
	}

	// Two calls need 2 tokens; 1 is left: nothing is taken and every request
	// with an id gets the error, the notification none.
	second := `[
		{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"expensive_tool"}},
		{"jsonrpc":"2.0","method":"notifications/initialized"},
		{"jsonrpc":"2.0","id":"four","method":"tools/call","params":{"name":"expensive_tool"}},
		{"jsonrpc":"2.0","id":5,"method":"ping"}]`
	w := h.post(alice, second)
	if w.Code != http.StatusTooManyRequests {
		t.Fatalf("second batch: status %d, want 429", w.Code)
	}
	want := `[` +
		`{"jsonrpc":"2.0","id":3,"error":{"code":-32029,"message":"Rate limit exceeded","data":{"retryAfterSeconds":1200,"limit":{"kind":"bucket","scope":"tool_per_user","tool":"expensive_tool"}}}},` +
		`{"jsonrpc":"2.0","id":"four","error":{"code":-32029,"message":"Rate limit exceeded","data":{"retryAfterSeconds":1200,"limit":{"kind":"bucket","scope":"tool_per_user","tool":"expensive_tool"}}}},` +
		`{"jsonrpc":"2.0","id":5,"error":{"code":-32029,"message":"Rate limit exceeded","data":{"retryAfterSeconds":1200,"limit":{"kind":"bucket","scope":"tool_per_user","tool":"expensive_tool"}}}}]`
	if got := w.Body.String(); got != want {
		t.Errorf("body = %s\nwant   %s", got, want)
	}
	if got := h.backend.hits.Load(); got != 1 {
		t.Errorf("backend saw %d requests, want 1", got)
	}
	if w := h.post(alice, call(6, "expensive_tool")); w.Code != http.StatusOK {
		t.Errorf("a single call with the token the batch left: status %d, want 200", w.Code)
	}
}

func TestARefusedNotificationGetsAnErrorWithANullID(t *testing.T) {
	h := newHarness(t, filter.Policy{Server: testServer, Global: limit(1, time.Hour)})
	notification := `{"jsonrpc":"2.0","method":"tools/call","params":{"name":"t"}}`
	if w := h.post("", notification); w.Code != http.StatusOK {
		t.Fatalf("first: status %d", w.Code)
	}
	w := h.post("", notification)
	if w.Code != http.StatusTooManyRequests {
		t.Fatalf("second: status %d, want 429", w.Code)
	}
	if got := string(decodeError(t, w).ID); got != "null" {
		t.Errorf("id = %s, want null", got)
	}
}

func TestMethodsOtherThanToolsCallAreNotLimited(t *testing.T) {
	h := newHarness(t, filter.Policy{Server: testServer, Global: limit(1, time.Hour)})
	h.post("", call(1, "t"))
	if w := h.post("", call(2, "t")); w.Code != http.StatusTooManyRequests {
		t.Fatalf("second call: status %d, want 429", w.Code)
	}
	for i, body := range []string{
		`{"jsonrpc":"2.0","id":3,"method":"tools/list"}`,
		`{"jsonrpc":"2.0","id":4,"method":"ping"}`,
		`{"jsonrpc":"2.0","id":5,"method":"prompts/get","params":{"name":"t"}}`,
		`{"jsonrpc":"2.0","method":"notifications/initialized"}`,
		`{"jsonrpc":"2.0","id":6,"result":{}}`,
	} {
		w := h.post("", body)
		if w.Code != http.StatusOK {
			t.Errorf("message %d: status %d, want 200", i, w.Code)
		}
		if got := w.Header().Get("RateLimit"); got != "" {
			t.Errorf("message %d: RateLimit = %q on an unlimited method", i, got)
		}
	}
}

func TestRateLimitFieldsListEveryLimitTheMostConstrainedFirst(t *testing.T) {
	iss := newIssuer(t)
	h := newHarness(t, filter.Policy{
		Server: testServer, Auth: iss.auth(), Global: limit(1000, time.Minute), PerUser: limit(100, time.Minute),
		Tools: map[string]filter.ToolLimits{"expensive_tool": {PerUser: limit(2, 10*time.Second)}},
	})
	w := h.post(iss.token(t, "alice"), call(1, "expensive_tool"))
	if w.Code != http.StatusOK {
		t.Fatalf("status %d", w.Code)
	}
	if got, want := w.Header().Get("RateLimit-Policy"), `"tool_per_user";q=2;w=10, "global";q=1000;w=60, "per_user";q=100;w=60`; got != want {
		t.Errorf("RateLimit-Policy = %q, want %q", got, want)
	}
	if got, want := w.Header().Get("RateLimit"), `"tool_per_user";r=1;t=5, "global";r=999;t=1, "per_user";r=99;t=1`; got != want {
		t.Errorf("RateLimit = %q, want %q", got, want)
	}
}

func TestMetricsCountDecisionsByScopeAndResult(t *testing.T) {
	iss := newIssuer(t)
	h := newHarness(t, filter.Policy{
		Server: testServer, Auth: iss.auth(), PerUser: limit(5, time.Hour),
		Tools: map[string]filter.ToolLimits{"expensive_tool": {PerUser: limit(1, time.Hour)}},
	})
	alice := iss.token(t, "alice")
	h.post(alice, call(1, "expensive_tool"))
	h.post(alice, call(2, "expensive_tool"))
	h.post(alice, call(3, "other_tool"))

	labels := func(scope, result string) map[string]string {
		return map[string]string{"namespace": "team-a", "server": "github", "scope": scope, "result": result}
	}
	for _, c := range []struct {
		scope, result string
		want          float64
	}{
		{"per_user", "allowed", 2},
		{"tool_per_user", "allowed", 1},
		{"tool_per_user", "rejected", 1},
		{"per_user", "rejected", 0}, // the server bucket did not refuse
		{"per_user", "fail_open", 0},
	} {
		if got := metricValue(t, h.reg, filter.MetricDecisions, labels(c.scope, c.result)); got != c.want {
			t.Errorf("%s{scope=%s,result=%s} = %v, want %v", filter.MetricDecisions, c.scope, c.result, got, c.want)
		}
	}
	if got := metricValue(t, h.reg, filter.MetricStoreDuration, map[string]string{"namespace": "team-a", "server": "github", "outcome": "ok"}); got != 3 {
		t.Errorf("%s{outcome=ok} has %v samples, want 3", filter.MetricStoreDuration, got)
	}
	if got := metricValue(t, h.reg, filter.MetricRejectedRequests, map[string]string{"namespace": "team-a", "server": "github", "reason": "rate_limited"}); got != 1 {
		t.Errorf("%s{reason=rate_limited} = %v, want 1", filter.MetricRejectedRequests, got)
	}
}

func TestNewRefusesAPolicyItCannotEnforce(t *testing.T) {
	auth := &filter.OIDCConfig{Issuer: "https://issuer.example", Audience: testAudience}
	tests := []struct {
		name   string
		policy filter.Policy
		want   string
	}{
		{"perUser without auth", filter.Policy{Server: testServer, PerUser: limit(1, time.Minute)}, "perUser needs auth"},
		{"a tool's perUser without auth", filter.Policy{Server: testServer, Tools: map[string]filter.ToolLimits{"t": {PerUser: limit(1, time.Minute)}}}, "tools[t].perUser needs auth"},
		{"a server that is not namespace/name", filter.Policy{Server: "github"}, `"namespace/name"`},
		{"zero maxTokens", filter.Policy{Server: testServer, Global: limit(0, time.Minute)}, "global: maxTokens must be at least 1"},
		{"a zero refill period", filter.Policy{Server: testServer, Auth: auth, PerUser: limit(1, 0)}, "perUser: refillPeriod must be greater than 0s"},
		{"a tool with no bucket nor cost", filter.Policy{Server: testServer, Tools: map[string]filter.ToolLimits{"t": {}}}, "tools[t]: set global, perUser, a quota, a cap or cost"},
		{"a prompt with no bucket", filter.Policy{Server: testServer, Global: limit(5, time.Minute), Prompts: map[string]filter.ToolLimits{"p": {Cost: 2}}}, "prompts[p]: set global, perUser, a quota or a cap"},
		{"a cost above the server's bucket", filter.Policy{Server: testServer, Global: limit(5, time.Minute), Tools: map[string]filter.ToolLimits{"t": {Cost: 6}}}, "tools[t].cost 6 is above global.maxTokens 5: such a call could never pass"},
		{"a cost above the tool's bucket", filter.Policy{Server: testServer, Tools: map[string]filter.ToolLimits{"t": {Cost: 3, Global: limit(2, time.Minute)}}}, "tools[t].cost 3 is above tools[t].global.maxTokens 2"},
		{"a cost above a resource's bucket", filter.Policy{Server: testServer, Resources: map[string]filter.ToolLimits{"file:///{p}": {Cost: 3, Global: limit(2, time.Minute)}}}, "resources[file:///{p}].cost 3 is above resources[file:///{p}].global.maxTokens 2"},
		{"a quota of an unknown window", filter.Policy{Server: testServer, GlobalQuota: &filter.Quota{Max: 5, Window: "fortnight"}}, "globalQuota: window must be hour, day, week or month"},
		{"a perUser quota without auth", filter.Policy{Server: testServer, PerUserQuota: &filter.Quota{Max: 5, Window: "day"}}, "perUserQuota needs auth"},
		{"an unknown time zone", filter.Policy{Server: testServer, GlobalQuota: &filter.Quota{Max: 5, Window: "day"}, TimeZone: "Mars/Olympus"}, `timeZone "Mars/Olympus" is not a time zone`},
		{"a cost above a quota", filter.Policy{Server: testServer, Tools: map[string]filter.ToolLimits{"t": {Cost: 6, GlobalQuota: &filter.Quota{Max: 5, Window: "month"}}}}, "tools[t].cost 6 is above tools[t].globalQuota.max 5"},
		{"a prompt's cost above its quota", filter.Policy{Server: testServer, Prompts: map[string]filter.ToolLimits{"p": {Cost: 6, GlobalQuota: &filter.Quota{Max: 5, Window: "day"}}}}, "prompts[p].cost 6 is above prompts[p].globalQuota.max 5"},
		{"a negative cost", filter.Policy{Server: testServer, Tools: map[string]filter.ToolLimits{"t": {Cost: -1, Global: limit(2, time.Minute)}}}, "tools[t].cost must be at least 1"},
		{"a template not closed", filter.Policy{Server: testServer, Resources: map[string]filter.ToolLimits{"file:///{p": {Global: limit(2, time.Minute)}}}, "resources[file:///{p]: an expression '{' is not closed"},
		{"a tool with no name", filter.Policy{Server: testServer, Tools: map[string]filter.ToolLimits{"": {Global: limit(1, time.Minute)}}}, "empty name"},
		{"auth without an audience", filter.Policy{Server: testServer, Auth: &filter.OIDCConfig{Issuer: "https://issuer.example"}}, "audience is required"},
		{"auth with a relative issuer", filter.Policy{Server: testServer, Auth: &filter.OIDCConfig{Issuer: "issuer", Audience: "a"}}, "issuer must be an absolute http(s) URL"},
		{"auth with a bad JWKS URL", filter.Policy{Server: testServer, Auth: &filter.OIDCConfig{Issuer: "https://i", Audience: "a", JWKSURL: "ftp://keys"}}, "jwksURL must be an absolute http(s) URL"},
		{"a plain http issuer", filter.Policy{Server: testServer, Auth: &filter.OIDCConfig{Issuer: "http://i", Audience: "a"}}, "issuer must be an https:// URL"},
		{"a plain http JWKS URL", filter.Policy{Server: testServer, Auth: &filter.OIDCConfig{Issuer: "https://i", Audience: "a", JWKSURL: "http://i/keys"}}, "jwksURL must be an https:// URL"},
	}
	shared, err := filter.NewShared(filter.SharedOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := filter.New(tt.policy, shared)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New() error = %v, want one containing %q", err, tt.want)
			}
		})
	}
	if _, err := filter.New(filter.Policy{Server: testServer, Auth: auth, Global: limit(1, time.Minute), PerUser: limit(1, time.Minute),
		Tools: map[string]filter.ToolLimits{"t": {Global: limit(1, time.Minute), PerUser: limit(1, time.Minute)}}}, shared); err != nil {
		t.Errorf("New() refused a valid policy: %v", err)
	}
}
