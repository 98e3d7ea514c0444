package filter_test

import (
	"context"
	"encoding/json"
	"maps"
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

// holdingFilter is the filter of policy in front of a backend that holds
// each call until release lets it go (a send lets one go, a close all) or
// its client goes; entered gets a value as each call reaches it.
func holdingFilter(t *testing.T, policy filter.Policy) (h http.Handler, entered <-chan struct{}, release chan<- struct{}) {
	t.Helper()
	shared, err := filter.NewShared(filter.SharedOptions{Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	f, err := filter.New(policy, shared)
	if err != nil {
		t.Fatal(err)
	}
	in, out := make(chan struct{}, 8), make(chan struct{})
	return f.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		in <- struct{}{}
		select {
		case <-out:
		case <-r.Context().Done():
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"jsonrpc":"2.0","id":1,"result":{}}`))
	})), in, out
}

// An in-flight cap admits at most its slots at once, and a call gives its
// slot back when its answer ends, whether or not its client stayed.
func TestACapAdmitsAtMostItsSlotsInFlight(t *testing.T) {
	iss := newIssuer(t)
	h, entered, release := holdingFilter(t, filter.Policy{Server: testServer, Auth: iss.auth(), PerUserMaxConcurrent: 2,
		Tools: map[string]filter.ToolLimits{"report": {GlobalMaxConcurrent: 1}}})
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

// methods[] entries limit other requests by method, with the same buckets,
// quotas and caps as the other entries; notifications and methods without
// an entry stay unlimited.
func TestMethodEntriesLimitOtherRequests(t *testing.T) {
	iss := newIssuer(t)
	hour := time.Hour
	h := newHarness(t, filter.Policy{
		Server: testServer, Auth: iss.auth(),
		Methods: map[string]filter.ToolLimits{
			"completion/complete": {PerUser: limit(2, hour)},
			"resources/subscribe": {GlobalQuota: &filter.Quota{Max: 1, Window: filter.WindowDay}},
		},
	})
	token := iss.token(t, "alice")
	complete := func(id int) string {
		return `{"jsonrpc":"2.0","id":` + itoa(id) + `,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"p"},"argument":{"name":"a","value":"x"}}}`
	}
	subscribe := func(id int) string {
		return `{"jsonrpc":"2.0","id":` + itoa(id) + `,"method":"resources/subscribe","params":{"uri":"file:///a"}}`
	}
	for i, step := range []struct {
		body  string
		limit string // the refusing limit; "" for a call that passes
	}{
		{complete(1), ""},
		{complete(2), ""},
		{complete(3), `{"kind":"bucket","scope":"method_per_user","method":"completion/complete"}`},
		{`{"jsonrpc":"2.0","method":"completion/complete","params":{}}`, ""}, // a notification
		{subscribe(4), ""},
		{subscribe(5), `{"kind":"quota","scope":"method_quota_global","method":"resources/subscribe"}`},
		{`{"jsonrpc":"2.0","id":6,"method":"tools/list"}`, ""},
		{`{"jsonrpc":"2.0","id":7,"method":"ping"}`, ""},
	} {
		w := h.post(token, step.body)
		switch {
		case step.limit == "" && w.Code != http.StatusOK:
			t.Errorf("step %d: status %d, want 200: %s", i+1, w.Code, w.Body)
		case step.limit != "" && (w.Code != http.StatusTooManyRequests || !strings.Contains(w.Body.String(), `"limit":`+step.limit)):
			t.Errorf("step %d: status %d, body %s; want 429 naming %s", i+1, w.Code, w.Body, step.limit)
		}
	}
	if got := metricValue(t, h.reg, filter.MetricDecisions, map[string]string{"scope": "method_per_user", "result": "rejected"}); got != 1 {
		t.Errorf("method_per_user rejections = %v, want 1", got)
	}
}

// A methods[] entry may not stand in for the entries of tools/call,
// prompts/get or resources/read, nor limit notifications; prompts,
// resources and methods take caps.
func TestMethodEntriesAreChecked(t *testing.T) {
	shared, err := filter.NewShared(filter.SharedOptions{Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		method string
		want   string
	}{
		{"tools/call", "methods[tools/call]: tools/call has entries of its own"},
		{"resources/read", "use tools[], prompts[] or resources[]"},
		{"notifications/cancelled", "notifications are never limited"},
		{"", "methods: an entry has an empty name"},
	} {
		_, err := filter.New(filter.Policy{Server: testServer, Methods: map[string]filter.ToolLimits{tt.method: {Global: limit(1, time.Hour)}}}, shared)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("methods[%s]: New() error = %v, want one containing %q", tt.method, err, tt.want)
		}
	}
	if _, err := filter.New(filter.Policy{Server: testServer,
		Methods:   map[string]filter.ToolLimits{"completion/complete": {GlobalMaxConcurrent: 1}},
		Prompts:   map[string]filter.ToolLimits{"p": {GlobalMaxConcurrent: 1}},
		Resources: map[string]filter.ToolLimits{"file:///{+p}": {GlobalMaxConcurrent: 1}}}, shared); err != nil {
		t.Errorf("New() refused caps on prompts, resources and methods: %v", err)
	}
}

// Caps on prompts, resources and methods hold their slots until the answer
// ends, as tools' do.
func TestPromptsResourcesAndMethodsTakeCaps(t *testing.T) {
	h, entered, release := holdingFilter(t, filter.Policy{Server: testServer,
		Prompts:   map[string]filter.ToolLimits{"review": {GlobalMaxConcurrent: 1}},
		Resources: map[string]filter.ToolLimits{"file:///logs/{+path}": {GlobalMaxConcurrent: 1}},
		Methods:   map[string]filter.ToolLimits{"completion/complete": {GlobalMaxConcurrent: 1}},
	})
	send := func(body string) *httptest.ResponseRecorder {
		r := httptest.NewRequestWithContext(t.Context(), http.MethodPost, "/mcp", strings.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	for _, c := range []struct{ body, scope, entry string }{
		{`{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"review"}}`, "prompt_concurrent_global", `"prompt":"review"`},
		{`{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///logs/a/b"}}`, "resource_concurrent_global", `"resource":"file:///logs/{+path}"`},
		{`{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{}}`, "method_concurrent_global", `"method":"completion/complete"`},
	} {
		done := make(chan *httptest.ResponseRecorder, 1)
		go func() { done <- send(c.body) }()
		<-entered
		w := send(c.body)
		want := `"limit":{"kind":"concurrency","scope":"` + c.scope + `",` + c.entry + `}`
		if w.Code != http.StatusTooManyRequests || !strings.Contains(w.Body.String(), want) {
			t.Errorf("a second %s in flight: status %d, %s; want 429 with %s", c.scope, w.Code, w.Body, want)
		}
		if got, want := w.Header().Get("RateLimit-Policy"), `"`+c.scope+`";q=1;qu="concurrent-requests"`; got != want {
			t.Errorf("RateLimit-Policy %q, want %q", got, want)
		}
		if got, want := w.Header().Get("RateLimit"), `"`+c.scope+`";r=0`; got != want {
			t.Errorf("RateLimit %q, want %q", got, want)
		}
		release <- struct{}{}
		if w := <-done; w.Code != http.StatusOK {
			t.Errorf("the first %s: status %d", c.scope, w.Code)
		}
		go func() { done <- send(c.body) }() // its slot is back
		<-entered
		release <- struct{}{}
		if w := <-done; w.Code != http.StatusOK {
			t.Errorf("%s after the first ended: status %d: %s", c.scope, w.Code, w.Body)
		}
	}
}

// The RateLimit fields list every limit a request is checked against,
// buckets, quotas and caps, the one that refused it first, and of one
// scope (a batch calling two tools) the most constrained only.
func TestRateLimitFieldsListBucketsQuotasAndCaps(t *testing.T) {
	iss := newIssuer(t)
	hour := time.Hour
	h := newHarness(t, filter.Policy{
		Server: testServer, Auth: iss.auth(),
		PerUser:              limit(10, hour),
		PerUserQuota:         &filter.Quota{Max: 100, Window: filter.WindowDay},
		PerUserMaxConcurrent: 4,
		Tools: map[string]filter.ToolLimits{
			"a": {PerUser: limit(3, hour)},
			"b": {PerUser: limit(1, hour)},
		},
	})
	token := iss.token(t, "alice")
	w := h.post(token, `[`+call(1, "a")+`,`+call(2, "b")+`]`)
	if w.Code != http.StatusOK {
		t.Fatalf("batch: status %d: %s", w.Code, w.Body)
	}
	// The harness's clock reads 22:13:20 UTC: 6,400 s to midnight; the
	// batch holds two slots until its answer ends.
	if got, want := w.Header().Get("RateLimit-Policy"),
		`"tool_per_user";q=1;w=3600, "per_user";q=10;w=3600, "quota_per_user";q=100;w=86400, "concurrent_per_user";q=4;qu="concurrent-requests"`; got != want {
		t.Errorf("RateLimit-Policy\n %s, want\n %s", got, want)
	}
	if got, want := w.Header().Get("RateLimit"),
		`"tool_per_user";r=0;t=3600, "per_user";r=8;t=720, "quota_per_user";r=98;t=6400, "concurrent_per_user";r=2`; got != want {
		t.Errorf("RateLimit\n %s, want\n %s", got, want)
	}
	w = h.post(token, call(3, "b"))
	if got, want := w.Header().Get("RateLimit-Policy"),
		`"tool_per_user";q=1;w=3600, "per_user";q=10;w=3600, "quota_per_user";q=100;w=86400, "concurrent_per_user";q=4;qu="concurrent-requests"`; w.Code != http.StatusTooManyRequests || got != want {
		t.Errorf("refused: status %d, RateLimit-Policy\n %s, want\n %s", w.Code, got, want)
	}
}

// One limit in shadow mode beside enforced ones: the enforced limits alone
// refuse, and take what each call takes; the shadow limit counts what it
// would refuse, marked in the RateLimit fields, and takes only what it
// would take if it were enforced: nothing from a call it would refuse.
func TestOneShadowLimitBesideEnforcedOnes(t *testing.T) {
	iss := newIssuer(t)
	hour := time.Hour
	shadowBucket := &limiter.Limit{MaxTokens: 2, RefillPeriod: hour, Shadow: true}
	policy := filter.Policy{
		Server: testServer, Auth: iss.auth(),
		PerUser:             limit(5, hour),
		PerUserQuota:        &filter.Quota{Max: 3, Window: filter.WindowDay, Shadow: true},
		MaxConcurrentShadow: true, PerUserMaxConcurrent: 1,
		Tools: map[string]filter.ToolLimits{"t": {PerUser: shadowBucket}},
	}
	h := newHarness(t, policy)
	token := iss.token(t, "alice")
	for i, step := range []struct {
		status int
		policy string // RateLimit-Policy
	}{
		// The call holds the cap's one slot: the most constrained limit.
		{http.StatusOK, `"concurrent_per_user";q=1;qu="concurrent-requests";shadow, "per_user";q=5;w=3600, "quota_per_user";q=3;w=86400;shadow, "tool_per_user";q=2;w=3600;shadow`},
		{http.StatusOK, `"tool_per_user";q=2;w=3600;shadow, "per_user";q=5;w=3600, "quota_per_user";q=3;w=86400;shadow, "concurrent_per_user";q=1;qu="concurrent-requests";shadow`},
		// The shadow bucket is empty: it would refuse; the call passes,
		// and takes nothing from it, the shadow quota or the shadow cap.
		{http.StatusOK, `"tool_per_user";q=2;w=3600;shadow, "per_user";q=5;w=3600, "quota_per_user";q=3;w=86400;shadow, "concurrent_per_user";q=1;qu="concurrent-requests";shadow`},
		{http.StatusOK, `"tool_per_user";q=2;w=3600;shadow, "per_user";q=5;w=3600, "quota_per_user";q=3;w=86400;shadow, "concurrent_per_user";q=1;qu="concurrent-requests";shadow`},
		{http.StatusOK, `"tool_per_user";q=2;w=3600;shadow, "per_user";q=5;w=3600, "quota_per_user";q=3;w=86400;shadow, "concurrent_per_user";q=1;qu="concurrent-requests";shadow`},
		// The enforced bucket is empty: it refuses, and names itself.
		{http.StatusTooManyRequests, `"per_user";q=5;w=3600, "quota_per_user";q=3;w=86400;shadow, "concurrent_per_user";q=1;qu="concurrent-requests";shadow, "tool_per_user";q=2;w=3600;shadow`},
	} {
		w := h.post(token, call(i+1, "t"))
		if w.Code != step.status {
			t.Fatalf("call %d: status %d, want %d: %s", i+1, w.Code, step.status, w.Body)
		}
		if got := w.Header().Get("RateLimit-Policy"); got != step.policy {
			t.Errorf("call %d: RateLimit-Policy\n %s, want\n %s", i+1, got, step.policy)
		}
		if step.status != http.StatusOK && !strings.Contains(w.Body.String(), `"limit":{"kind":"bucket","scope":"per_user"}`) {
			t.Errorf("call %d: %s, want the per_user bucket named", i+1, w.Body)
		}
	}
	for _, c := range []struct {
		scope, result string
		want          float64
	}{
		{"per_user", "allowed", 5},
		{"per_user", "rejected", 1},
		{"tool_per_user", "allowed", 2},
		{"tool_per_user", "shadow_rejected", 4},
		{"quota_per_user", "allowed", 2},
	} {
		if got := metricValue(t, h.reg, filter.MetricDecisions, map[string]string{"scope": c.scope, "result": c.result}); got != c.want {
			t.Errorf("%s %s = %v, want %v", c.scope, c.result, got, c.want)
		}
	}
	if got := metricValue(t, h.reg, filter.MetricShadowRefusals, nil); got != 3 {
		t.Errorf("%s = %v, want 3 (calls 3 to 5)", filter.MetricShadowRefusals, got)
	}
	b, err := h.shared.Budgets(t.Context(), &policy, "alice")
	if err != nil {
		t.Fatal(err)
	}
	left := map[string]int64{}
	for _, bu := range b.Buckets {
		if bu.Shadow != (bu.Scope != "per_user") {
			t.Errorf("%s: shadow %v", bu.Scope, bu.Shadow)
		}
		left[bu.Scope] = bu.Remaining
	}
	if want := map[string]int64{"per_user": 0, "tool_per_user": 0, "quota_per_user": 1, "concurrent_per_user": 1}; !maps.Equal(left, want) {
		t.Errorf("budgets left %v, want %v", left, want)
	}
}

// Calls of the tools tools[] names are counted per tool and outcome; calls
// of other tools, whose names clients choose, make no series.
func TestLimitedToolsAreCountedPerTool(t *testing.T) {
	iss := newIssuer(t)
	hour := time.Hour
	h := newHarness(t, filter.Policy{
		Server: testServer, Auth: iss.auth(),
		Tools: map[string]filter.ToolLimits{
			"search": {PerUser: limit(1, hour)},
			"draft":  {PerUser: limit(5, hour)},
		},
	})
	token := iss.token(t, "alice")
	for i, step := range []struct {
		tool   string
		status int
	}{
		{"search", http.StatusOK},
		{"search", http.StatusTooManyRequests},
		{"unlisted", http.StatusOK},
		{"unlisted", http.StatusOK},
	} {
		if w := h.post(token, call(i+1, step.tool)); w.Code != step.status {
			t.Fatalf("step %d, %s: status %d, want %d: %s", i+1, step.tool, w.Code, step.status, w.Body)
		}
	}
	for _, c := range []struct {
		tool, outcome string
		want          float64
	}{
		{"search", "allowed", 1},
		{"search", "rejected", 1},
		{"search", "shed", 0},
		{"draft", "allowed", 0},
	} {
		if got := metricValue(t, h.reg, filter.MetricToolRequests, map[string]string{"tool": c.tool, "outcome": c.outcome}); got != c.want {
			t.Errorf("%s %s = %v, want %v", c.tool, c.outcome, got, c.want)
		}
	}
	families, err := h.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range families {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "tool" && l.GetValue() == "unlisted" {
					t.Errorf("%s has a series for a tool no entry names", mf.GetName())
				}
			}
		}
	}
}
