package gateway

import (
	"bytes"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/toolgate/toolgate/filter"
)

// mirrorRecorder is a mirror backend that records what it receives.
type mirrorRecorder struct {
	mu       sync.Mutex
	received []echoed
	arrived  chan struct{} // one value per request, never blocking
}

func newMirrorRecorder(t *testing.T) (*mirrorRecorder, *httptest.Server) {
	t.Helper()
	m := &mirrorRecorder{arrived: make(chan struct{}, 100000)}
	srv := newHTTPTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body := new(bytes.Buffer)
		_, _ = body.ReadFrom(r.Body)
		m.mu.Lock()
		m.received = append(m.received, echoed{
			Method: r.Method, Host: r.Host, Path: r.URL.Path, RawQuery: r.URL.RawQuery, Header: r.Header.Clone(), Body: body.String(),
		})
		m.mu.Unlock()
		m.arrived <- struct{}{}
		http.Error(w, "the mirror's answer is thrown away", http.StatusTeapot)
	}))
	return m, srv
}

// wait waits for n requests, failing the test after waitLong.
func (m *mirrorRecorder) wait(t *testing.T, n int) []echoed {
	t.Helper()
	deadline := time.After(waitLong)
	for range n {
		select {
		case <-m.arrived:
		case <-deadline:
			t.Fatalf("the mirror received %d of %d requests", len(m.all()), n)
		}
	}
	return m.all()
}

func (m *mirrorRecorder) all() []echoed {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]echoed(nil), m.received...)
}

// mirrorCount is the value of the mirror metric with result.
func mirrorCount(t *testing.T, s *Server, result string) float64 {
	t.Helper()
	families, err := s.metrics.Registry().Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range families {
		if mf.GetName() != "toolgate_gateway_mirrored_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" && l.GetValue() == result {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

func mirrorFilterTo(srv *httptest.Server, fraction *Fraction) Filter {
	return Filter{Type: FilterRequestMirror, RequestMirror: &RequestMirror{Backend: backendOf("ns/shadow:8080", 1, srv), Fraction: fraction}}
}

func post(t *testing.T, url, body string, header ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Add(header[i], header[i+1])
	}
	return do(t, req)
}

func TestAMirroredRequestReachesTheMirrorAsTheFiltersBeforeItLeftIt(t *testing.T) {
	main := echoBackend(t, "main")
	mirror, mirrorSrv := newMirrorRecorder(t)
	s := newServer(t, Options{})
	mustApply(t, s, oneRoute(Rule{
		Filters: []Filter{
			{Type: FilterRequestHeaderModifier, RequestHeaderModifier: &HeaderModifier{
				Set: []Header{{Name: "X-Before", Value: "set"}}, Remove: []string{"X-Drop"},
			}},
			mirrorFilterTo(mirrorSrv, nil),
			{Type: FilterRequestHeaderModifier, RequestHeaderModifier: &HeaderModifier{Set: []Header{{Name: "X-After", Value: "set"}}}},
		},
		Backends: []Backend{backendOf("ns/main:8080", 1, main)},
	}))

	res, body := post(t, gatewayURL(t, s, "web")+"/tools/call?id=7", `{"jsonrpc":"2.0"}`,
		"X-Drop", "x", "Authorization", "Bearer caller", "Connection", "X-Hop", "X-Hop", "h")
	if res.StatusCode != http.StatusOK || decodeEcho(t, body).Backend != "main" {
		t.Fatalf("client got %d %s, want the main backend's 200", res.StatusCode, body)
	}
	got := mirror.wait(t, 1)[0]
	if got.Method != http.MethodPost || got.Path != "/tools/call" || got.RawQuery != "id=7" || got.Body != `{"jsonrpc":"2.0"}` {
		t.Errorf("mirror got %s %s?%s with body %q, want the client's POST /tools/call?id=7 and its body", got.Method, got.Path, got.RawQuery, got.Body)
	}
	if got.Header.Get("X-Before") != "set" || got.Header.Get("X-Drop") != "" || got.Header.Get("X-After") != "" {
		t.Errorf("mirror headers %v: want the filters before the mirror applied and those after it not", got.Header)
	}
	if got.Header.Get("Authorization") != "Bearer caller" {
		t.Errorf("mirror Authorization %q: a rule without an MCP policy mirrors the request as it is", got.Header.Get("Authorization"))
	}
	if got.Header.Get("X-Hop") != "" || got.Header.Get("X-Forwarded-For") == "" || got.Header.Get("X-Forwarded-Host") == "" {
		t.Errorf("mirror headers %v: want hop-by-hop fields gone and the forwarding fields set", got.Header)
	}
	if !strings.HasPrefix(got.Host, "127.0.0.1:") {
		t.Errorf("mirror Host %q, want the client's", got.Host)
	}
}

func TestEveryMirrorOfARuleGetsItsCopy(t *testing.T) {
	main := echoBackend(t, "main")
	first, firstSrv := newMirrorRecorder(t)
	second, secondSrv := newMirrorRecorder(t)
	s := newServer(t, Options{})
	mustApply(t, s, oneRoute(Rule{
		Filters:  []Filter{mirrorFilterTo(firstSrv, nil), mirrorFilterTo(secondSrv, nil)},
		Backends: []Backend{backendOf("ns/main:8080", 1, main)},
	}))
	if res, body := post(t, gatewayURL(t, s, "web")+"/multi", "payload"); res.StatusCode != http.StatusOK {
		t.Fatalf("client got %d %s", res.StatusCode, body)
	}
	for name, m := range map[string]*mirrorRecorder{"first": first, "second": second} {
		if got := m.wait(t, 1)[0]; got.Path != "/multi" || got.Body != "payload" {
			t.Errorf("%s mirror got %s with body %q", name, got.Path, got.Body)
		}
	}
}

func TestAMirrorThatFailsOrHangsLeavesTheClientsAnswerAlone(t *testing.T) {
	main := echoBackend(t, "main")
	release := make(chan struct{})
	hanging := newHTTPTestServer(t, http.HandlerFunc(func(http.ResponseWriter, *http.Request) { <-release }))
	t.Cleanup(func() { close(release) }) // before the server closes (cleanups run last first)
	failing := newHTTPTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "down", http.StatusInternalServerError)
	}))
	for _, tc := range []struct {
		name   string
		mirror Backend
	}{
		{"a mirror nobody listens on", Backend{Name: "ns/closed:80", Weight: 1, Endpoints: []string{closedPort(t)}}},
		{"a mirror that answers 500", backendOf("ns/failing:80", 1, failing)},
		{"a mirror that never answers", backendOf("ns/hanging:80", 1, hanging)},
		{"a mirror without endpoints", Backend{Name: "ns/empty:80", Weight: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newServer(t, Options{})
			mustApply(t, s, oneRoute(Rule{
				Filters:  []Filter{{Type: FilterRequestMirror, RequestMirror: &RequestMirror{Backend: tc.mirror}}},
				Backends: []Backend{backendOf("ns/main:8080", 1, main)},
			}))
			// The client's own timeout (waitLong) fails the test if the
			// mirror holds the answer.
			res, body := post(t, gatewayURL(t, s, "web")+"/x", "body")
			if res.StatusCode != http.StatusOK || decodeEcho(t, body).Body != "body" {
				t.Errorf("client got %d %s, want the main backend's answer with the body", res.StatusCode, body)
			}
		})
	}
}

func TestAnUnresolvedMirrorIsDroppedAndTheRequestGoesOn(t *testing.T) {
	main := echoBackend(t, "main")
	s := newServer(t, Options{})
	mustApply(t, s, oneRoute(Rule{
		Filters:  []Filter{{Type: FilterRequestMirror, RequestMirror: &RequestMirror{Backend: Backend{Name: "ns/missing:80", Weight: 1, Invalid: true}}}},
		Backends: []Backend{backendOf("ns/main:8080", 1, main)},
	}))
	if res, body := get(t, gatewayURL(t, s, "web")+"/x"); res.StatusCode != http.StatusOK {
		t.Errorf("client got %d %s, want 200", res.StatusCode, body)
	}
}

func TestABodyOverTheBoundIsForwardedWholeAndNotMirrored(t *testing.T) {
	main := echoBackend(t, "main")
	mirror, mirrorSrv := newMirrorRecorder(t)
	s := newServer(t, Options{})
	mustApply(t, s, oneRoute(Rule{
		Filters:  []Filter{mirrorFilterTo(mirrorSrv, nil)},
		Backends: []Backend{backendOf("ns/main:8080", 1, main)},
	}))
	long := strings.Repeat("a", maxMirrorBody+1)
	for _, chunked := range []bool{false, true} {
		req, err := http.NewRequest(http.MethodPost, gatewayURL(t, s, "web")+"/long", strings.NewReader(long))
		if err != nil {
			t.Fatal(err)
		}
		if chunked {
			req.ContentLength = -1
		}
		res, body := do(t, req)
		if res.StatusCode != http.StatusOK || decodeEcho(t, body).Body != long {
			t.Errorf("chunked %v: client got %d and a body of %d bytes, want 200 and the whole body", chunked, res.StatusCode, len(decodeEcho(t, body).Body))
		}
	}
	if got := mirrorCount(t, s, mirrorDropped); got != 2 {
		t.Errorf("dropped copies = %v, want 2", got)
	}
	// A body at the bound is mirrored: the bound is not off by one.
	if res, _ := post(t, gatewayURL(t, s, "web")+"/at-bound", long[:maxMirrorBody]); res.StatusCode != http.StatusOK {
		t.Fatalf("client got %d", res.StatusCode)
	}
	if got := mirror.wait(t, 1); len(got) != 1 || got[0].Path != "/at-bound" || len(got[0].Body) != maxMirrorBody {
		t.Errorf("mirror got %d requests, the first to %s with %d bytes; want only /at-bound with its body", len(got), got[0].Path, len(got[0].Body))
	}
}

// lockedRand is a seeded source for the mirror's draws, safe for
// concurrent use, that counts the draws that mirror.
type lockedRand struct {
	mu       sync.Mutex
	r        *rand.Rand
	below    int32
	mirrored int
}

func (l *lockedRand) intN(n int32) int32 {
	l.mu.Lock()
	defer l.mu.Unlock()
	v := l.r.Int32N(n)
	if v < l.below {
		l.mirrored++
	}
	return v
}

func TestAFractionMirrorsThatShareOfRequests(t *testing.T) {
	const requests = 2000
	for _, tc := range []struct {
		name     string
		fraction *Fraction
	}{
		{"percent 20", &Fraction{Numerator: 20, Denominator: 100}},
		{"fraction 25/50", &Fraction{Numerator: 25, Denominator: 50}},
		{"percent 35", &Fraction{Numerator: 35, Denominator: 100}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			main := echoBackend(t, "main")
			mirror, mirrorSrv := newMirrorRecorder(t)
			s := newServer(t, Options{})
			src := &lockedRand{r: rand.New(rand.NewPCG(1, 2)), below: tc.fraction.Numerator}
			s.mirrors.intN = src.intN
			mustApply(t, s, oneRoute(Rule{
				Filters:  []Filter{mirrorFilterTo(mirrorSrv, tc.fraction)},
				Backends: []Backend{backendOf("ns/main:8080", 1, main)},
			}))
			url := gatewayURL(t, s, "web") + "/percent"
			for range requests {
				if res, body := get(t, url); res.StatusCode != http.StatusOK {
					t.Fatalf("client got %d %s", res.StatusCode, body)
				}
			}
			// Every draw below the numerator is a copy the mirror must
			// receive, and nothing else is.
			src.mu.Lock()
			want := src.mirrored
			src.mu.Unlock()
			mirror.wait(t, want)
			select {
			case <-mirror.arrived:
				t.Errorf("the mirror received more than the %d requests drawn", want)
			case <-time.After(100 * time.Millisecond):
			}
			// The seeded source is fixed, so the share is too: within four
			// standard deviations of the binomial, as any fair draw is
			// almost always.
			p := float64(tc.fraction.Numerator) / float64(tc.fraction.Denominator)
			margin := 4 * math.Sqrt(requests*p*(1-p))
			if got := float64(want); math.Abs(got-requests*p) > margin {
				t.Errorf("%v of %d requests mirrored, want %v ± %.0f", got, requests, requests*p, margin)
			}
		})
	}
}

func TestANoneOrAllFractionDrawsNothing(t *testing.T) {
	main := echoBackend(t, "main")
	for _, tc := range []struct {
		name     string
		fraction *Fraction
		want     int
	}{
		{"0 of 100", &Fraction{Numerator: 0, Denominator: 100}, 0},
		{"7 of 7", &Fraction{Numerator: 7, Denominator: 7}, 5},
		{"no fraction", nil, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mirror, mirrorSrv := newMirrorRecorder(t)
			s := newServer(t, Options{})
			s.mirrors.intN = func(int32) int32 { t.Error("a draw for a fraction that needs none"); return 0 }
			mustApply(t, s, oneRoute(Rule{
				Filters:  []Filter{mirrorFilterTo(mirrorSrv, tc.fraction)},
				Backends: []Backend{backendOf("ns/main:8080", 1, main)},
			}))
			for range 5 {
				get(t, gatewayURL(t, s, "web")+"/x")
			}
			mirror.wait(t, tc.want)
			if tc.want == 0 {
				// The only way to see nothing come: give it the time.
				time.Sleep(100 * time.Millisecond)
				if n := len(mirror.all()); n != 0 {
					t.Errorf("the mirror received %d requests, want none", n)
				}
			}
		})
	}
}

func TestInvalidMirrorFractionsFailApply(t *testing.T) {
	srv := echoBackend(t, "m")
	for _, f := range []Fraction{{Numerator: 1, Denominator: 0}, {Numerator: -1, Denominator: 10}, {Numerator: 11, Denominator: 10}} {
		s := newServer(t, Options{})
		if err := s.Apply(oneRoute(Rule{Filters: []Filter{mirrorFilterTo(srv, &f)}})); err == nil || !strings.Contains(err.Error(), "fraction") {
			t.Errorf("fraction %d/%d: Apply error %v, want one about the fraction", f.Numerator, f.Denominator, err)
		}
	}
}

// admitting is a fake MCP policy filter: it refuses requests with
// X-Refuse (as an MCP filter refuses a token or a rate limit), and gives
// the others the gateway's backend credential in X-Api-Key, as backendAuth
// does, without the caller's Authorization.
var admitting = extensionFunc(func(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Refuse") != "" {
			http.Error(w, "refused", http.StatusTooManyRequests)
			return
		}
		r = r.Clone(r.Context())
		r.Header.Del("Authorization")
		r.Header.Set("X-Api-Key", "backend-secret")
		next.ServeHTTP(w, r)
	})
})

func mcpRef() Filter {
	return Filter{Type: FilterExtensionRef, ExtensionRef: &ExtensionRef{
		Group: "toolgate.dev", Kind: "MCPServer", Name: "mcp",
		MCPServer: &filter.Policy{Server: "ns/mcp", BackendAuth: &filter.BackendAuth{Header: &filter.StaticHeader{Name: "x-api-key", Value: "backend-secret"}}},
	}}
}

func TestAnMCPRequestIsMirroredOnlyOnceAdmittedAndWithoutCredentials(t *testing.T) {
	for _, tc := range []struct {
		name string
		rule func(mirror Filter, backend Backend) Rule
	}{
		{"a mirror before the policy", func(m Filter, b Backend) Rule {
			return Rule{Filters: []Filter{m, mcpRef()}, Backends: []Backend{b}}
		}},
		{"a mirror after the policy", func(m Filter, b Backend) Rule {
			return Rule{Filters: []Filter{mcpRef(), m}, Backends: []Backend{b}}
		}},
		{"a mirror of the rule, the policy on the backend", func(m Filter, b Backend) Rule {
			b.Filters = []Filter{mcpRef()}
			return Rule{Filters: []Filter{m}, Backends: []Backend{b}}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			main := echoBackend(t, "main")
			mirror, mirrorSrv := newMirrorRecorder(t)
			s := newServer(t, Options{Extensions: fakeExtensions{"mcp": admitting}.build})
			mustApply(t, s, oneRoute(tc.rule(mirrorFilterTo(mirrorSrv, nil), backendOf("ns/main:8080", 1, main))))
			url := gatewayURL(t, s, "web")
			if res, _ := post(t, url+"/refused", "{}", "X-Refuse", "1", "Authorization", "Bearer caller"); res.StatusCode != http.StatusTooManyRequests {
				t.Fatalf("refused request got %d, want the policy's 429", res.StatusCode)
			}
			res, body := post(t, url+"/admitted", "{}", "Authorization", "Bearer caller")
			if res.StatusCode != http.StatusOK || decodeEcho(t, body).Header.Get("X-Api-Key") != "backend-secret" {
				t.Fatalf("admitted request got %d %s, want the main backend with its credential", res.StatusCode, body)
			}
			mirror.wait(t, 1)
			time.Sleep(100 * time.Millisecond) // a copy of the refused request, sent first, would be here now
			got := mirror.all()
			if len(got) != 1 || got[0].Path != "/admitted" {
				t.Fatalf("mirror got %d requests (first to %s), want only the admitted one", len(got), got[0].Path)
			}
			if a, k := got[0].Header.Get("Authorization"), got[0].Header.Get("X-Api-Key"); a != "" || k != "" {
				t.Errorf("mirror got Authorization %q and X-Api-Key %q, want no credential", a, k)
			}
		})
	}
}
