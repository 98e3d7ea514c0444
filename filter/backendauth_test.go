package filter_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/toolgate/toolgate/filter"
)

// tokenServer is a token endpoint: client credentials and token exchange
// (RFC 8693) for one client, counting what it issues.
type tokenServer struct {
	*httptest.Server
	issued atomic.Int64
	// status, when not 0, is answered instead, with error.
	status atomic.Int64
	mu     sync.Mutex
	forms  []map[string]string
}

func newTokenServer(t *testing.T, clientID, secret string, expiresIn int) *tokenServer {
	t.Helper()
	ts := &tokenServer{}
	ts.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if s := ts.status.Load(); s != 0 {
			w.WriteHeader(int(s))
			_, _ = fmt.Fprint(w, `{"error":"temporarily_unavailable"}`)
			return
		}
		id, pass, ok := r.BasicAuth()
		if !ok || id != clientID || pass != secret {
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = fmt.Fprint(w, `{"error":"invalid_client","error_description":"unknown client"}`)
			return
		}
		_ = r.ParseForm()
		form := map[string]string{}
		for k := range r.PostForm {
			form[k] = r.PostForm.Get(k)
		}
		ts.mu.Lock()
		ts.forms = append(ts.forms, form)
		ts.mu.Unlock()
		var token string
		switch form["grant_type"] {
		case "client_credentials":
			token = fmt.Sprintf("cc-%d", ts.issued.Add(1))
		case "urn:ietf:params:oauth:grant-type:token-exchange":
			if form["subject_token"] == "" || form["subject_token_type"] != "urn:ietf:params:oauth:token-type:access_token" {
				w.WriteHeader(http.StatusBadRequest)
				_, _ = fmt.Fprint(w, `{"error":"invalid_request"}`)
				return
			}
			token = fmt.Sprintf("x-%d-for-%s", ts.issued.Add(1), form["audience"])
		default:
			w.WriteHeader(http.StatusBadRequest)
			_, _ = fmt.Fprint(w, `{"error":"unsupported_grant_type"}`)
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"access_token": token, "token_type": "Bearer", "expires_in": expiresIn,
			"issued_token_type": "urn:ietf:params:oauth:token-type:access_token"})
	}))
	t.Cleanup(ts.Close)
	return ts
}

func (ts *tokenServer) lastForm() map[string]string {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if len(ts.forms) == 0 {
		return nil
	}
	return ts.forms[len(ts.forms)-1]
}

// A static header from a Secret reaches the backend in place of the
// caller's token, which never does.
func TestBackendAuthSetsAStaticHeader(t *testing.T) {
	iss := newIssuer(t)
	for _, tc := range []struct {
		name   string
		header string
		auth   bool
	}{
		{"an API key header, callers verified", "X-API-Key", true},
		{"Authorization, callers verified", "Authorization", true},
		{"an API key header, anonymous callers", "X-API-Key", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filter.Policy{Server: testServer, BackendAuth: &filter.BackendAuth{Header: &filter.StaticHeader{Name: tc.header, Value: "Bearer backend-secret"}}}
			if tc.auth {
				p.Auth = iss.auth()
			}
			h := newHarness(t, p)
			w := h.post(iss.token(t, "alice"), call(1, "t"))
			if w.Code != http.StatusOK {
				t.Fatalf("status %d: %s", w.Code, w.Body)
			}
			got := h.backend.lastHeader()
			if got.Get(tc.header) != "Bearer backend-secret" {
				t.Errorf("the backend got %s %q", tc.header, got.Get(tc.header))
			}
			if tc.header != "Authorization" && got.Get("Authorization") != "" {
				t.Errorf("the caller's token reached the backend: %q", got.Get("Authorization"))
			}
		})
	}
}

// Client credentials: the gateway's own token, asked for once and used
// until it nears its end, by every caller.
func TestBackendAuthUsesClientCredentials(t *testing.T) {
	iss := newIssuer(t)
	ts := newTokenServer(t, "toolgate", "s3cret", 3600)
	p := filter.Policy{Server: testServer, Auth: iss.auth(), BackendAuth: &filter.BackendAuth{ClientCredentials: &filter.OAuth2Client{
		TokenURL: ts.URL, ClientID: "toolgate", ClientSecret: "s3cret", Scopes: []string{"repo", "read"}, Audience: "https://backend.example", AllowInsecureHTTP: true,
	}}}
	h := newHarness(t, p)
	for i, user := range []string{"alice", "bob", "alice"} {
		if w := h.post(iss.token(t, user), call(i, "t")); w.Code != http.StatusOK {
			t.Fatalf("%s: status %d: %s", user, w.Code, w.Body)
		}
		if got := h.backend.lastHeader().Get("Authorization"); got != "Bearer cc-1" {
			t.Errorf("%s: the backend got Authorization %q, want the gateway's token", user, got)
		}
	}
	if n := ts.issued.Load(); n != 1 {
		t.Errorf("%d tokens asked for, want 1: it is cached", n)
	}
	if f := ts.lastForm(); f["scope"] != "repo read" || f["audience"] != "https://backend.example" {
		t.Errorf("token request %v", f)
	}
}

// Token exchange: each caller's token is exchanged for one for the
// backend's audience, once per caller's token.
func TestBackendAuthExchangesTheCallersToken(t *testing.T) {
	iss := newIssuer(t)
	ts := newTokenServer(t, "toolgate", "s3cret", 3600)
	p := filter.Policy{Server: testServer, Auth: iss.auth(), BackendAuth: &filter.BackendAuth{TokenExchange: &filter.OAuth2Client{
		TokenURL: ts.URL, ClientID: "toolgate", ClientSecret: "s3cret", Audience: "github", AllowInsecureHTTP: true,
	}}}
	h := newHarness(t, p)
	alice, bob := iss.token(t, "alice"), iss.token(t, "bob")
	seen := map[string]string{}
	for i, c := range []struct{ user, token string }{{"alice", alice}, {"bob", bob}, {"alice", alice}, {"bob", bob}} {
		if w := h.post(c.token, call(i, "t")); w.Code != http.StatusOK {
			t.Fatalf("%s: status %d: %s", c.user, w.Code, w.Body)
		}
		got := h.backend.lastHeader().Get("Authorization")
		if !strings.HasSuffix(got, "-for-github") || got == "Bearer "+c.token {
			t.Fatalf("%s: the backend got Authorization %q, want an exchanged token", c.user, got)
		}
		if prev, ok := seen[c.user]; ok && prev != got {
			t.Errorf("%s: a second exchange (%q, then %q): it is cached", c.user, prev, got)
		}
		seen[c.user] = got
	}
	if seen["alice"] == seen["bob"] {
		t.Errorf("alice and bob got the same token %q", seen["alice"])
	}
	if n := ts.issued.Load(); n != 2 {
		t.Errorf("%d exchanges, want 2", n)
	}
	if f := ts.lastForm(); f["subject_token"] != bob {
		t.Errorf("the last exchange's subject_token is not bob's token: %v", f)
	}
}

// An authorization server that refuses or cannot be reached fails the
// call with 502 or 503 and a JSON-RPC error: the backend is never called
// without its credential, nor with the caller's.
func TestBackendAuthFailuresNeverReachTheBackend(t *testing.T) {
	iss := newIssuer(t)
	ts := newTokenServer(t, "toolgate", "s3cret", 3600)
	down := httptest.NewServer(http.NotFoundHandler())
	downURL := down.URL
	down.Close()
	for _, tc := range []struct {
		name     string
		client   filter.OAuth2Client
		status   int // of the token server
		want     int
		contains string
	}{
		{"a wrong client secret", filter.OAuth2Client{TokenURL: ts.URL, ClientID: "toolgate", ClientSecret: "wrong"}, 0, http.StatusBadGateway, "refused"},
		{"a failing authorization server", filter.OAuth2Client{TokenURL: ts.URL, ClientID: "toolgate", ClientSecret: "s3cret"}, http.StatusServiceUnavailable, http.StatusServiceUnavailable, "failed"},
		{"an authorization server that is down", filter.OAuth2Client{TokenURL: downURL, ClientID: "toolgate", ClientSecret: "s3cret"}, 0, http.StatusServiceUnavailable, "cannot be reached"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts.status.Store(int64(tc.status))
			defer ts.status.Store(0)
			client := tc.client
			client.AllowInsecureHTTP = true
			h := newHarness(t, filter.Policy{Server: testServer, Auth: iss.auth(), BackendAuth: &filter.BackendAuth{ClientCredentials: &client}})
			w := h.post(iss.token(t, "alice"), call(7, "t"))
			if w.Code != tc.want || !strings.Contains(w.Body.String(), tc.contains) || !strings.Contains(w.Body.String(), `"error"`) {
				t.Errorf("status %d, %s; want %d with a JSON-RPC error saying %q", w.Code, w.Body, tc.want, tc.contains)
			}
			if tc.want == http.StatusServiceUnavailable && w.Header().Get("Retry-After") == "" {
				t.Errorf("503 without Retry-After")
			}
			if hits := h.backend.hits.Load(); hits != 0 {
				t.Errorf("the backend was called %d times", hits)
			}
			if got := metricValue(t, h.reg, filter.MetricRejectedRequests, map[string]string{"reason": "backend_credentials"}); got != 1 {
				t.Errorf("backend_credentials refusals = %v, want 1", got)
			}
		})
	}
}

// Policies that cannot be enforced as written are refused.
func TestBackendAuthIsChecked(t *testing.T) {
	iss := newIssuer(t)
	cc := &filter.OAuth2Client{TokenURL: "https://as.example/token", ClientID: "toolgate", ClientSecret: "s"}
	for _, tc := range []struct {
		name   string
		policy filter.Policy
		want   string
	}{
		{"two ways", filter.Policy{BackendAuth: &filter.BackendAuth{Header: &filter.StaticHeader{Name: "X-Key", Value: "v"}, ClientCredentials: cc}}, "exactly one of"},
		{"none", filter.Policy{BackendAuth: &filter.BackendAuth{}}, "exactly one of"},
		{"with the caller's token forwarded", filter.Policy{Auth: iss.auth(), ForwardAuthorization: true, BackendAuth: &filter.BackendAuth{ClientCredentials: cc}}, "exclude each other"},
		{"a bad header name", filter.Policy{BackendAuth: &filter.BackendAuth{Header: &filter.StaticHeader{Name: "X Key", Value: "v"}}}, "is not a header name"},
		{"a value with a line break", filter.Policy{BackendAuth: &filter.BackendAuth{Header: &filter.StaticHeader{Name: "X-Key", Value: "a\r\nb"}}}, "no line breaks"},
		{"a plain http token URL", filter.Policy{BackendAuth: &filter.BackendAuth{ClientCredentials: &filter.OAuth2Client{TokenURL: "http://as/token", ClientID: "c", ClientSecret: "s"}}}, "must be an https:// URL"},
		{"no client secret", filter.Policy{BackendAuth: &filter.BackendAuth{ClientCredentials: &filter.OAuth2Client{TokenURL: "https://as/token", ClientID: "c"}}}, "needs a clientID and a client secret"},
		{"an exchange without auth", filter.Policy{BackendAuth: &filter.BackendAuth{TokenExchange: &filter.OAuth2Client{TokenURL: "https://as/token", ClientID: "c", ClientSecret: "s", Audience: "b"}}}, "needs auth"},
		{"an exchange without audience", filter.Policy{Auth: iss.auth(), BackendAuth: &filter.BackendAuth{TokenExchange: cc}}, "audience is required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.policy.Server = testServer
			err := tc.policy.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Validate() = %v, want an error saying %q", err, tc.want)
			}
		})
	}
}

// The secrets of backendAuth are redacted where the configuration is shown.
func TestBackendAuthRedacted(t *testing.T) {
	b := &filter.BackendAuth{TokenExchange: &filter.OAuth2Client{TokenURL: "https://as/token", ClientID: "c", ClientSecret: "s3cret", Audience: "b"}}
	r := b.Redacted()
	if r.TokenExchange.ClientSecret != "[redacted]" || b.TokenExchange.ClientSecret != "s3cret" || r.TokenExchange.ClientID != "c" {
		t.Errorf("redacted %+v, original %+v", r.TokenExchange, b.TokenExchange)
	}
	h := (&filter.BackendAuth{Header: &filter.StaticHeader{Name: "X-Key", Value: "k"}}).Redacted()
	if h.Header.Value != "[redacted]" || h.Header.Name != "X-Key" {
		t.Errorf("redacted header %+v", h.Header)
	}
}
