package filter_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/toolgate/toolgate/filter"
	"github.com/toolgate/toolgate/filter/audit"
	"github.com/toolgate/toolgate/filter/limiter"
)

// A tool's cost is taken from every bucket its call is checked against: the
// server's and its own.
func TestACallTakesItsCostFromEveryBucket(t *testing.T) {
	iss := newIssuer(t)
	hour := time.Hour
	h := newHarness(t, filter.Policy{
		Server: testServer, Auth: iss.auth(),
		Global: limit(10, hour), PerUser: limit(8, hour),
		Tools: map[string]filter.ToolLimits{
			"report": {Cost: 5, PerUser: limit(5, hour)},
			"search": {Cost: 2},
		},
	})
	token := iss.token(t, "alice")
	for i, step := range []struct {
		tool   string
		status int
	}{
		{"report", http.StatusOK},              // global 5 left, alice 3, report 0
		{"report", http.StatusTooManyRequests}, // report's bucket is empty: nothing taken
		{"search", http.StatusOK},              // global 3, alice 1
		{"search", http.StatusTooManyRequests}, // alice holds 1, not 2
		{"other", http.StatusOK},               // cost 1: global 2, alice 0
	} {
		if w := h.post(token, call(i+1, step.tool)); w.Code != step.status {
			t.Fatalf("step %d, %s: status %d, want %d: %s", i+1, step.tool, w.Code, step.status, w.Body)
		}
	}
	for _, b := range []struct {
		id     limiter.BucketID
		limit  limiter.Limit
		tokens int64
	}{
		{limiter.BucketID{Server: testServer}, *limit(10, hour), 2},
		{limiter.BucketID{Server: testServer, User: "alice"}, *limit(8, hour), 0},
	} {
		if b.tokens > 0 && !h.bucketHolds(t, b.id, b.limit, b.tokens) {
			t.Errorf("%+v holds less than %d", b.id, b.tokens)
		}
		if h.bucketHolds(t, b.id, b.limit, 1) {
			t.Errorf("%+v holds more than %d", b.id, b.tokens)
		}
	}
}

// prompts/get and resources/read are limited by their entries, by name, by
// URI, or by URI template; what no entry names, and notifications, are not
// limited; the server's buckets count tool calls only.
func TestPromptsAndResourcesAreLimitedByTheirEntries(t *testing.T) {
	iss := newIssuer(t)
	hour := time.Hour
	h := newHarness(t, filter.Policy{
		Server: testServer, Auth: iss.auth(),
		PerUser: limit(1, hour),
		Prompts: map[string]filter.ToolLimits{"review": {PerUser: limit(2, hour)}},
		Resources: map[string]filter.ToolLimits{
			"file:///docs/{name}":   {Global: limit(1, hour)},
			"file:///docs/index.md": {Global: limit(4, hour), Cost: 2},
			"file:///logs/{+path}":  {Global: limit(1, hour)},
		},
	})
	token := iss.token(t, "alice")
	get := func(id int, name string) string {
		return `{"jsonrpc":"2.0","id":` + itoa(id) + `,"method":"prompts/get","params":{"name":"` + name + `"}}`
	}
	read := func(id int, uri string) string {
		return `{"jsonrpc":"2.0","id":` + itoa(id) + `,"method":"resources/read","params":{"uri":"` + uri + `"}}`
	}
	for i, step := range []struct {
		body    string
		headers []string
		status  int
	}{
		{get(1, "review"), nil, http.StatusOK},
		{get(2, "review"), []string{"Mcp-Protocol-Version", "2026-07-28", "Mcp-Method", "prompts/get"}, http.StatusOK},
		{get(3, "review"), nil, http.StatusTooManyRequests},
		{`{"jsonrpc":"2.0","method":"prompts/get","params":{"name":"review"}}`, nil, http.StatusOK}, // a notification
		{get(4, "summarize"), nil, http.StatusOK},
		{get(5, "summarize"), nil, http.StatusOK},
		{read(6, "file:///docs/a.md"), nil, http.StatusOK},
		{read(7, "file:///docs/b.md"), nil, http.StatusTooManyRequests}, // the template's bucket
		{read(8, "file:///docs/index.md"), nil, http.StatusOK},          // the exact entry wins, cost 2
		{read(9, "file:///docs/index.md"), nil, http.StatusOK},
		{read(10, "file:///docs/index.md"), nil, http.StatusTooManyRequests},
		{read(11, "file:///docs/a/b.md"), nil, http.StatusOK}, // {name} matches no '/': no entry
		{read(12, "file:///logs/a/b.log"), nil, http.StatusOK},
		{read(13, "file:///logs/c.log"), nil, http.StatusTooManyRequests}, // {+path} matches any
		{call(14, "t"), nil, http.StatusOK},                               // the server's bucket: untouched by the rest
		{call(15, "t"), nil, http.StatusTooManyRequests},
	} {
		w := h.post(token, step.body, step.headers...)
		if w.Code != step.status {
			t.Fatalf("step %d: status %d, want %d: %s", i+1, w.Code, step.status, w.Body)
		}
	}
	// Each refusal says which limit refused it.
	for _, c := range []struct{ body, want string }{
		{get(20, "review"), `{"kind":"bucket","scope":"prompt_per_user","prompt":"review"}`},
		{read(21, "file:///docs/c.md"), `{"kind":"bucket","scope":"resource_global","resource":"file:///docs/{name}"}`},
		{call(22, "t"), `{"kind":"bucket","scope":"per_user"}`},
	} {
		w := h.post(token, c.body)
		var resp struct {
			Error struct {
				Data struct {
					Limit json.RawMessage `json:"limit"`
				} `json:"data"`
			} `json:"error"`
		}
		if err := json.Unmarshal(w.Body.Bytes(), &resp); err != nil || string(resp.Error.Data.Limit) != c.want {
			t.Errorf("%s: error.data.limit %s (%v), want %s", c.body, resp.Error.Data.Limit, err, c.want)
		}
	}
	if got := metricValue(t, h.reg, filter.MetricDecisions, map[string]string{"scope": "prompt_per_user", "result": "rejected"}); got != 2 {
		t.Errorf("prompt_per_user rejections = %v, want 2", got)
	}
	if got := metricValue(t, h.reg, filter.MetricDecisions, map[string]string{"scope": "resource_global", "result": "rejected"}); got != 4 {
		t.Errorf("resource_global rejections = %v, want 4", got)
	}
}

// Limits in shadow mode decide and count exactly as if enforced, and
// refuse nothing: the burst an enforcing policy refuses passes whole, and
// what would have been refused is counted the same.
func TestShadowLimitsCountWhatTheyWouldRefuse(t *testing.T) {
	iss := newIssuer(t)
	var out lockedBuffer
	log, err := audit.New(&out, audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	policy := filter.Policy{Server: testServer, Auth: iss.auth(), PerUser: limit(2, time.Hour),
		Tools: map[string]filter.ToolLimits{"report": {Cost: 2}}}
	enforcing := newHarness(t, policy)
	policy.Shadow = true
	shadow := newHarness(t, policy, func(o *filter.SharedOptions) { o.Audit = log })
	token := iss.token(t, "alice")
	burst := []string{"t", "report", "t", "t", "report", "t"}
	refused := 0
	for i, tool := range burst {
		w := enforcing.post(token, call(i+1, tool))
		if w.Code == http.StatusTooManyRequests {
			refused++
		}
		s := shadow.post(token, call(i+1, tool))
		if s.Code != http.StatusOK || shadow.backend.hits.Load() != int64(i+1) {
			t.Fatalf("call %d in shadow mode: status %d, backend hits %d", i+1, s.Code, shadow.backend.hits.Load())
		}
		if p := s.Header().Get("RateLimit-Policy"); !strings.HasSuffix(p, ";shadow") {
			t.Errorf("call %d: RateLimit-Policy %q is not marked shadow", i+1, p)
		}
	}
	if refused != 4 {
		t.Fatalf("the enforcing policy refused %d of the burst, want 4", refused)
	}
	labels := map[string]string{"scope": "per_user", "result": "shadow_rejected"}
	if got := metricValue(t, shadow.reg, filter.MetricDecisions, labels); got != float64(refused) {
		t.Errorf("shadow_rejected decisions = %v, want %d, as many as the enforcing policy refused", got, refused)
	}
	if got := metricValue(t, shadow.reg, filter.MetricShadowRefusals, nil); got != float64(refused) {
		t.Errorf("%s = %v, want %d", filter.MetricShadowRefusals, got, refused)
	}
	if got := metricValue(t, shadow.reg, filter.MetricRejectedRequests, map[string]string{"reason": "rate_limited"}); got != 0 {
		t.Errorf("shadow limits counted %v refusals", got)
	}
	_ = log.Close()
	if n := strings.Count(out.b.String(), `"wouldRefuse":"rate_limited"`); n != refused {
		t.Errorf("%d audit records say they would have been refused, want %d:\n%s", n, refused, out.b.String())
	}
}

// Budgets names every bucket that applies to a user, entries' included,
// and reads them without taking.
func TestBudgetsReadEveryBucketOfAUser(t *testing.T) {
	iss := newIssuer(t)
	hour := time.Hour
	policy := filter.Policy{
		Server: testServer, Auth: iss.auth(), Shadow: true,
		Global:               limit(50, hour),
		PerUserMaxConcurrent: 2,
		Prompts:              map[string]filter.ToolLimits{"review": {PerUser: limit(2, hour)}},
		Resources:            map[string]filter.ToolLimits{"file:///docs/{name}": {Global: limit(4, hour), Cost: 2}},
	}
	h := newHarness(t, policy)
	token := iss.token(t, "alice")
	h.post(token, `{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"review"}}`)
	h.post(token, `{"jsonrpc":"2.0","id":2,"method":"resources/read","params":{"uri":"file:///docs/a.md"}}`)
	for range 2 {
		b, err := h.shared.Budgets(t.Context(), &policy, "alice")
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]int64{}
		for _, bu := range b.Buckets {
			got[bu.Scope+"/"+bu.Prompt+bu.Resource] = bu.Remaining
		}
		want := map[string]int64{"global/": 50, "prompt_per_user/review": 1, "resource_global/file:///docs/{name}": 2, "concurrent_per_user/": 2}
		if !b.Shadow || b.Degraded || len(got) != len(want) {
			t.Fatalf("budgets %+v, want %v", b, want)
		}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("%s: %d left, want %d", k, got[k], v)
			}
		}
	}
}

// A daily quota starts afresh at midnight in its time zone: the harness's
// clock reads 22:13:20 UTC, 23:13:20 in Paris, whose midnight comes an hour
// before UTC's.
func TestADailyQuotaResetsAtMidnightInItsTimeZone(t *testing.T) {
	iss := newIssuer(t)
	for _, tc := range []struct {
		zone          string
		untilMidnight time.Duration
	}{
		{"Europe/Paris", 46*time.Minute + 40*time.Second},
		{"", time.Hour + 46*time.Minute + 40*time.Second}, // UTC
	} {
		t.Run(tc.zone, func(t *testing.T) {
			h := newHarness(t, filter.Policy{
				Server: testServer, Auth: iss.auth(), TimeZone: tc.zone,
				PerUserQuota: &filter.Quota{Max: 3, Window: filter.WindowDay},
				Tools:        map[string]filter.ToolLimits{"report": {Cost: 2}},
			})
			token := iss.token(t, "alice")
			for i, want := range []int{http.StatusOK, http.StatusTooManyRequests} { // report costs 2
				if w := h.post(token, call(i+1, "report")); w.Code != want {
					t.Fatalf("report %d: status %d, want %d", i+1, w.Code, want)
				}
			}
			for i, want := range []int{http.StatusOK, http.StatusTooManyRequests} {
				if w := h.post(token, call(i+1, "t")); w.Code != want {
					t.Fatalf("call %d: status %d, want %d", i+1, w.Code, want)
				}
			}
			w := h.post(token, call(4, "t")) // the quota is spent
			if w.Code != http.StatusTooManyRequests {
				t.Fatalf("status %d, want 429", w.Code)
			}
			if got, want := w.Header().Get("Retry-After"), itoa(int(tc.untilMidnight/time.Second)); got != want {
				t.Errorf("Retry-After %s, want %s: the window ends at midnight", got, want)
			}
			if p := w.Header().Get("RateLimit-Policy"); p != `"quota_per_user";q=3;w=86400` {
				t.Errorf("RateLimit-Policy %q", p)
			}
			if !strings.Contains(w.Body.String(), `"limit":{"kind":"quota","scope":"quota_per_user"}`) {
				t.Errorf("the refusal does not name the quota: %s", w.Body)
			}
			h.clock.Advance(tc.untilMidnight - time.Second)
			if w := h.post(token, call(5, "t")); w.Code != http.StatusTooManyRequests {
				t.Errorf("a second before midnight: status %d, want 429", w.Code)
			}
			h.clock.Advance(time.Second)
			if w := h.post(token, call(6, "report")); w.Code != http.StatusOK {
				t.Errorf("at midnight: status %d, want 200", w.Code)
			}
		})
	}
}

// Calendar windows, in a zone with daylight saving time: a day is 23 or 25
// hours around the changes, a week starts on Monday, a month on the 1st.
func TestQuotaWindows(t *testing.T) {
	paris, err := time.LoadLocation("Europe/Paris")
	if err != nil {
		t.Fatal(err)
	}
	at := func(s string) time.Time {
		v, err := time.ParseInLocation("2006-01-02 15:04", s, paris)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	for _, tc := range []struct {
		kind, now, start, end string
	}{
		{filter.WindowHour, "2026-03-29 01:30", "2026-03-29 01:00", "2026-03-29 03:00"}, // 02:00 does not exist that night
		{filter.WindowDay, "2026-03-29 12:00", "2026-03-29 00:00", "2026-03-30 00:00"},  // 23 hours
		{filter.WindowDay, "2026-10-25 12:00", "2026-10-25 00:00", "2026-10-26 00:00"},  // 25 hours
		{filter.WindowWeek, "2026-12-06 18:00", "2026-11-30 00:00", "2026-12-07 00:00"}, // a Sunday: the week began on Monday
		{filter.WindowWeek, "2026-12-07 00:00", "2026-12-07 00:00", "2026-12-14 00:00"},
		{filter.WindowMonth, "2026-12-31 23:59", "2026-12-01 00:00", "2027-01-01 00:00"},
	} {
		w := filter.QuotaWindow(tc.kind, at(tc.now), paris)
		if !w.Start.Equal(at(tc.start)) || !w.End.Equal(at(tc.end)) {
			t.Errorf("%s at %s: [%s, %s), want [%s, %s)", tc.kind, tc.now, w.Start.In(paris), w.End.In(paris), tc.start, tc.end)
		}
	}
}

// Prompts and resources take quotas as tools do.
func TestPromptsAndResourcesTakeQuotas(t *testing.T) {
	iss := newIssuer(t)
	h := newHarness(t, filter.Policy{
		Server: testServer, Auth: iss.auth(),
		Prompts:   map[string]filter.ToolLimits{"review": {GlobalQuota: &filter.Quota{Max: 2, Window: filter.WindowDay}}},
		Resources: map[string]filter.ToolLimits{"file:///docs/{name}": {Cost: 3, PerUserQuota: &filter.Quota{Max: 5, Window: filter.WindowMonth}}},
	})
	token := iss.token(t, "alice")
	for i, step := range []struct {
		body, limit string
	}{
		{`{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"review"}}`, ""},
		{`{"jsonrpc":"2.0","id":2,"method":"prompts/get","params":{"name":"review"}}`, ""},
		{`{"jsonrpc":"2.0","id":3,"method":"prompts/get","params":{"name":"review"}}`, `{"kind":"quota","scope":"prompt_quota_global","prompt":"review"}`},
		{`{"jsonrpc":"2.0","id":4,"method":"resources/read","params":{"uri":"file:///docs/a.md"}}`, ""},
		{`{"jsonrpc":"2.0","id":5,"method":"resources/read","params":{"uri":"file:///docs/b.md"}}`, `{"kind":"quota","scope":"resource_quota_per_user","resource":"file:///docs/{name}"}`},
	} {
		w := h.post(token, step.body)
		switch {
		case step.limit == "" && w.Code != http.StatusOK:
			t.Errorf("step %d: status %d, want 200: %s", i+1, w.Code, w.Body)
		case step.limit != "" && (w.Code != http.StatusTooManyRequests || !strings.Contains(w.Body.String(), `"limit":`+step.limit)):
			t.Errorf("step %d: status %d, body %s; want 429 naming %s", i+1, w.Code, w.Body, step.limit)
		}
	}
}

// An in-flight cap admits at most its slots at once, and a call gives its
// slot back when its answer ends, whether or not its client stayed.
func TestACapAdmitsAtMostItsSlotsInFlight(t *testing.T) {
	iss := newIssuer(t)
	shared, err := filter.NewShared(filter.SharedOptions{Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	f, err := filter.New(filter.Policy{Server: testServer, Auth: iss.auth(), PerUserMaxConcurrent: 2,
		Tools: map[string]filter.ToolLimits{"report": {GlobalMaxConcurrent: 1}}}, shared)
	if err != nil {
		t.Fatal(err)
	}
	entered := make(chan struct{}, 8)
	release := make(chan struct{})
	h := f.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		select {
		case <-release:
		case <-r.Context().Done():
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"jsonrpc":"2.0","id":1,"result":{}}`))
	}))
	token := iss.token(t, "alice")
	send := func(ctx context.Context, tool string) *httptest.ResponseRecorder {
		r := httptest.NewRequestWithContext(ctx, http.MethodPost, "/mcp", strings.NewReader(call(1, tool)))
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("Authorization", "Bearer "+token)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	done := make(chan *httptest.ResponseRecorder, 8)
	ctx, cancel := context.WithCancel(t.Context())
	go func() { done <- send(ctx, "t") }()              // a client that will go away
	go func() { done <- send(t.Context(), "report") }() // holds report's one slot
	<-entered
	<-entered
	w := send(t.Context(), "t") // alice holds 2
	if w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") != "1" ||
		!strings.Contains(w.Body.String(), `"limit":{"kind":"concurrency","scope":"concurrent_per_user"}`) {
		t.Fatalf("a third call in flight: status %d, Retry-After %q, %s; want 429 for concurrency", w.Code, w.Header().Get("Retry-After"), w.Body)
	}
	cancel() // the client goes: its call ends, and gives its slot back
	<-done
	go func() { done <- send(t.Context(), "t") }()
	<-entered
	if w := send(t.Context(), "report"); w.Code != http.StatusTooManyRequests ||
		!strings.Contains(w.Body.String(), `"scope":"concurrent_per_user"`) {
		t.Errorf("alice holds 2 again: status %d, %s", w.Code, w.Body)
	}
	close(release)
	for range 2 {
		if w := <-done; w.Code != http.StatusOK {
			t.Errorf("a call in flight ended with %d", w.Code)
		}
	}
	// Every slot is back.
	for _, tool := range []string{"report", "t"} {
		if w := send(t.Context(), tool); w.Code != http.StatusOK {
			t.Errorf("%s after every call ended: status %d: %s", tool, w.Code, w.Body)
		}
	}
}
