package filter_test

import (
	"crypto/rsa"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/toolgate/toolgate/filter"
	"github.com/toolgate/toolgate/internal/testissuer"
)

func TestForgedTokensWithUnknownKeyIDsDoNotMakeTheGatewayFetchKeysAgain(t *testing.T) {
	keysOnce.Do(makeKeys)
	if errKeys != nil {
		t.Fatalf("generate keys: %v", errKeys)
	}
	iss := startTestIssuer(t)
	h := newHarness(t, filter.Policy{Server: testServer, Auth: jwksAuth(iss)},
		func(o *filter.SharedOptions) { o.KeyRefreshInterval = time.Hour })

	const workers, forgedPerWorker = 20, 10
	// Forged tokens carry the right issuer and audience, but are signed by
	// a key the issuer does not publish, under key IDs it never used.
	forged := make([]string, workers*forgedPerWorker)
	for i := range forged {
		forged[i] = issuerToken(t, iss, otherRSA, fmt.Sprintf("forged-%d", i), "mallory")
	}
	// Every worker also sends a valid token of its own, so each is
	// verified rather than found in the token cache.
	valid := make([]string, workers)
	for i := range valid {
		valid[i] = issuerToken(t, iss, nil, "test", fmt.Sprintf("user-%d", i))
	}

	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range forgedPerWorker {
				if i == forgedPerWorker/2 {
					if code := h.post(valid[w], call(1, "t")).Code; code != http.StatusOK {
						t.Errorf("worker %d: a valid token during the attack got %d, want 200", w, code)
					}
				}
				if code := h.post(forged[w*forgedPerWorker+i], call(1, "t")).Code; code != http.StatusUnauthorized {
					t.Errorf("worker %d: forged token %d got %d, want 401", w, i, code)
				}
			}
		})
	}
	wg.Wait()
	if got := iss.JWKSFetches(); got != 1 {
		t.Errorf("the key set was fetched %d times during the attack, want 1", got)
	}

	if code := h.post(issuerToken(t, iss, nil, "test", "after"), call(1, "t")).Code; code != http.StatusOK {
		t.Errorf("a valid token after the attack got %d, want 200", code)
	}
	if got := iss.JWKSFetches(); got != 1 {
		t.Errorf("the key set was fetched %d times after the attack, want 1", got)
	}
}

func TestARotatedKeyIsAcceptedAfterOneFetchOnceTheIntervalHasPassed(t *testing.T) {
	const interval = time.Minute
	iss := startTestIssuer(t)
	h := newHarness(t, filter.Policy{Server: testServer, Auth: jwksAuth(iss)},
		func(o *filter.SharedOptions) { o.KeyRefreshInterval = interval })

	if code := h.post(issuerToken(t, iss, nil, "test", "alice"), call(1, "t")).Code; code != http.StatusOK {
		t.Fatalf("a token signed with the first key got %d, want 200", code)
	}
	signedWithOldKey := issuerToken(t, iss, nil, "test", "dave")
	if err := iss.AddKey("rotated"); err != nil {
		t.Fatal(err)
	}
	// Before the interval has passed since the first fetch, a token
	// signed with the new key is refused and fetches nothing.
	h.clock.Advance(interval - time.Second)
	if code := h.post(issuerToken(t, iss, nil, "rotated", "early"), call(1, "t")).Code; code != http.StatusUnauthorized {
		t.Errorf("a token signed with the new key within the interval got %d, want 401", code)
	}
	if got := iss.JWKSFetches(); got != 1 {
		t.Errorf("the key set was fetched %d times within the interval, want 1", got)
	}
	h.clock.Advance(time.Second)

	// Requests that arrive together with the new key share one fetch.
	var wg sync.WaitGroup
	for i := range 10 {
		token := issuerToken(t, iss, nil, "rotated", fmt.Sprintf("user-%d", i))
		wg.Go(func() {
			if code := h.post(token, call(1, "t")).Code; code != http.StatusOK {
				t.Errorf("token %d signed with the new key got %d, want 200", i, code)
			}
		})
	}
	wg.Wait()
	if got := iss.JWKSFetches(); got != 2 {
		t.Errorf("the key set was fetched %d times, want 2", got)
	}

	for _, tt := range []struct{ name, token string }{
		{"another token signed with the new key", issuerToken(t, iss, nil, "rotated", "carol")},
		{"a token signed with the old key", signedWithOldKey},
	} {
		if code := h.post(tt.token, call(1, "t")).Code; code != http.StatusOK {
			t.Errorf("%s got %d, want 200", tt.name, code)
		}
	}
	if got := iss.JWKSFetches(); got != 2 {
		t.Errorf("the key set was fetched %d times after the rotation, want 2", got)
	}
}

func TestANegativeKeyRefreshIntervalIsRefused(t *testing.T) {
	if _, err := filter.NewShared(filter.SharedOptions{KeyRefreshInterval: -time.Second}); err == nil {
		t.Errorf("NewShared took a negative KeyRefreshInterval")
	}
}

func startTestIssuer(t *testing.T) *testissuer.Issuer {
	t.Helper()
	iss, err := testissuer.Start()
	if err != nil {
		t.Fatalf("start the issuer: %v", err)
	}
	t.Cleanup(iss.Close)
	return iss
}

// jwksAuth is the OIDC configuration of a server trusting iss through its
// JWKS URL.
func jwksAuth(iss *testissuer.Issuer) *filter.OIDCConfig {
	return &filter.OIDCConfig{Issuer: iss.URL(), Audience: testAudience, JWKSURL: iss.JWKSURL(), AllowInsecureHTTP: true}
}

// issuerToken is a token of iss for user and this server's audience, signed
// with key (the issuer's newest key when nil) under kid.
func issuerToken(t *testing.T, iss *testissuer.Issuer, key *rsa.PrivateKey, kid, user string) string {
	t.Helper()
	token, err := iss.SignedToken(key, kid, user, testAudience)
	if err != nil {
		t.Fatalf("sign a token: %v", err)
	}
	return token
}
