package filter_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/toolgate/toolgate/filter"
)

// The gateway follows an issuer's redirects within its origin only: never
// to plain HTTP or another host, where anyone could serve keys.
func TestKeySetRedirectsToAnotherOriginAreNotFollowed(t *testing.T) {
	iss := newIssuer(t)
	var elsewhere atomic.Int64
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		elsewhere.Add(1)
		http.Redirect(w, r, iss.JWKSURL(), http.StatusFound)
	}))
	t.Cleanup(other.Close)
	redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/moved":
			http.Redirect(w, r, "/jwks-elsewhere", http.StatusFound)
		case "/jwks-elsewhere":
			http.Redirect(w, r, other.URL+"/jwks", http.StatusFound)
		case "/old":
			http.Redirect(w, r, "/jwks", http.StatusMovedPermanently)
		case "/jwks":
			http.Redirect(w, r, iss.JWKSURL(), http.StatusFound) // another port: another origin
		}
	}))
	t.Cleanup(redirector.Close)
	sameOrigin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/old" {
			http.Redirect(w, r, "/new", http.StatusMovedPermanently)
			return
		}
		resp, err := http.Get(iss.JWKSURL())
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer func() { _ = resp.Body.Close() }()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(readAll(t, resp))
	}))
	t.Cleanup(sameOrigin.Close)

	tests := []struct {
		name    string
		jwksURL string
		want    int
	}{
		{"a redirect to another port", redirector.URL + "/old", http.StatusUnauthorized},
		{"a chain that ends on another host", redirector.URL + "/moved", http.StatusUnauthorized},
		{"a redirect within the origin", sameOrigin.URL + "/old", http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			auth := iss.auth()
			auth.JWKSURL = tt.jwksURL
			h := newHarness(t, filter.Policy{Server: testServer, Auth: auth})
			if w := h.post(iss.token(t, "alice"), call(1, "t")); w.Code != tt.want {
				t.Errorf("status %d, want %d: %s", w.Code, tt.want, w.Body)
			}
		})
	}
	if n := elsewhere.Load(); n != 0 {
		t.Errorf("the other origin was asked %d times", n)
	}
}

// A successful discovery is used for an hour, then looked up again in the
// background while its keys stay in use.
func TestADiscoveryIsLookedUpAgainAfterAnHour(t *testing.T) {
	iss := newIssuer(t)
	auth := iss.auth()
	auth.JWKSURL = "" // through discovery
	h := newHarness(t, filter.Policy{Server: testServer, Auth: auth})
	if w := h.post(iss.token(t, "alice"), call(1, "t")); w.Code != http.StatusOK {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	h.clock.Advance(59 * time.Minute)
	if w := h.post(iss.token(t, "bob"), call(1, "t")); w.Code != http.StatusOK || iss.discoveryHits.Load() != 1 {
		t.Fatalf("within the hour: status %d, %d discoveries; want 200 and 1", w.Code, iss.discoveryHits.Load())
	}
	h.clock.Advance(time.Minute)
	if w := h.post(iss.token(t, "carol"), call(1, "t")); w.Code != http.StatusOK {
		t.Fatalf("after the hour: status %d, want 200 with the keys found before", w.Code)
	}
	for deadline := time.Now().Add(10 * time.Second); iss.discoveryHits.Load() != 2; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d discoveries after the hour, want 2", iss.discoveryHits.Load())
		}
	}
}

// Key sets and discovery results of issuers that no policy trusts any more
// are let go at the next configuration.
func TestIssuersNoPolicyTrustsAreDropped(t *testing.T) {
	a, b := newIssuer(t), newIssuer(t)
	byDiscovery := b.auth()
	byDiscovery.JWKSURL = ""
	pa := &filter.Policy{Server: "ns/a", Auth: a.auth()}
	pb := &filter.Policy{Server: "ns/b", Auth: byDiscovery}
	h := newHarness(t, *pa)
	fb, err := filter.New(*pb, h.shared)
	if err != nil {
		t.Fatal(err)
	}
	hb := fb.Wrap(h.backend)
	if w := h.post(a.token(t, "alice"), call(1, "t")); w.Code != http.StatusOK {
		t.Fatalf("server a: status %d", w.Code)
	}
	r := httptest.NewRequest(http.MethodPost, "/mcp", stringsReader(call(1, "t")))
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("Authorization", "Bearer "+b.token(t, "bob"))
	w := httptest.NewRecorder()
	hb.ServeHTTP(w, r)
	if w.Code != http.StatusOK {
		t.Fatalf("server b: status %d: %s", w.Code, w.Body)
	}
	if ks, ds := h.shared.IssuerState(); ks != 2 || ds != 1 {
		t.Fatalf("%d key sets and %d discoveries held, want 2 and 1", ks, ds)
	}
	h.shared.Retain(slices.Values([]*filter.Policy{pa, pb}))
	if ks, ds := h.shared.IssuerState(); ks != 2 || ds != 1 {
		t.Errorf("with both servers kept: %d key sets and %d discoveries, want 2 and 1", ks, ds)
	}
	h.shared.Retain(slices.Values([]*filter.Policy{pa}))
	if ks, ds := h.shared.IssuerState(); ks != 1 || ds != 0 {
		t.Errorf("with server b removed: %d key sets and %d discoveries, want 1 and 0", ks, ds)
	}
	h.shared.Retain(slices.Values([]*filter.Policy{{Server: "ns/c"}}))
	if ks, ds := h.shared.IssuerState(); ks != 0 || ds != 0 {
		t.Errorf("with no server trusting an issuer: %d key sets and %d discoveries, want none", ks, ds)
	}
}

func readAll(t *testing.T, resp *http.Response) []byte {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func stringsReader(s string) io.Reader { return strings.NewReader(s) }
