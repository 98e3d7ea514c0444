package filter

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/toolgate/toolgate/internal/testissuer"
)

// forgingKey is a key no issuer publishes; made once, like every key the
// tests need.
var forgingKey = sync.OnceValue(func() *ecdsa.PrivateKey {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	return key
})

// signES256 signs a small payload with key under kid (none when "").
func signES256(t *testing.T, key *ecdsa.PrivateKey, kid string) string {
	t.Helper()
	opts := (&jose.SignerOptions{}).WithType("JWT")
	if kid != "" {
		opts = opts.WithHeader("kid", kid)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key}, opts)
	if err != nil {
		t.Fatalf("signer: %v", err)
	}
	jws, err := signer.Sign([]byte(`{"sub":"alice"}`))
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	raw, err := jws.CompactSerialize()
	if err != nil {
		t.Fatalf("serialize: %v", err)
	}
	return raw
}

func newTestKeySet(url string, interval time.Duration) *keySet {
	return newKeySet(url, &http.Client{Timeout: DefaultOIDCTimeout}, interval, time.Now, slog.New(slog.DiscardHandler))
}

func TestTheKeySetFetchesOnlyWhenItMayHaveNewKeys(t *testing.T) {
	tests := []struct {
		name     string
		interval time.Duration
		// beforeFirstFetch runs before a token signed with the issuer's
		// newest key verifies, which fetches the key set once;
		// afterFirstFetch runs after.
		beforeFirstFetch, afterFirstFetch func(t *testing.T, iss *testissuer.Issuer)
		token                             func(t *testing.T, iss *testissuer.Issuer) string
		wantErr                           string // "" when the token verifies
		wantFetches                       int64
	}{
		{
			name:        "a token signed with a held key verifies without a fetch",
			interval:    time.Nanosecond,
			token:       func(t *testing.T, iss *testissuer.Issuer) string { return signedToken(t, iss, "test") },
			wantFetches: 1,
		},
		{
			name:             "a token without a key ID is checked against every held key",
			interval:         time.Nanosecond,
			beforeFirstFetch: func(t *testing.T, iss *testissuer.Issuer) { addKey(t, iss, "second") },
			// Signed with the second key: the first one tried fails.
			token:       func(t *testing.T, iss *testissuer.Issuer) string { return signedToken(t, iss, "") },
			wantFetches: 1,
		},
		{
			name:        "a token without a key ID that no held key verifies fetches like an unknown key ID",
			interval:    time.Nanosecond,
			token:       func(t *testing.T, _ *testissuer.Issuer) string { return signES256(t, forgingKey(), "") },
			wantErr:     `verifies the token (key ID "")`,
			wantFetches: 2,
		},
		{
			name:        "an unknown key ID within the interval is refused without a fetch",
			interval:    time.Hour,
			token:       func(t *testing.T, _ *testissuer.Issuer) string { return signES256(t, forgingKey(), "made-up") },
			wantErr:     "are fetched again after 1h0m0s at the earliest",
			wantFetches: 1,
		},
		{
			name:        "a held key ID with a forged signature within the interval is refused without a fetch",
			interval:    time.Hour,
			token:       func(t *testing.T, _ *testissuer.Issuer) string { return signES256(t, forgingKey(), "test") },
			wantErr:     "are fetched again after",
			wantFetches: 1,
		},
		{
			name:        "an unknown key ID after the interval fetches once, then is refused",
			interval:    time.Nanosecond,
			token:       func(t *testing.T, _ *testissuer.Issuer) string { return signES256(t, forgingKey(), "made-up") },
			wantErr:     `verifies the token (key ID "made-up")`,
			wantFetches: 2,
		},
		{
			name:            "a new key ID within the interval is refused without a fetch",
			interval:        time.Hour,
			afterFirstFetch: func(t *testing.T, iss *testissuer.Issuer) { addKey(t, iss, "second") },
			token:           func(t *testing.T, iss *testissuer.Issuer) string { return signedToken(t, iss, "second") },
			wantErr:         "are fetched again after",
			wantFetches:     1,
		},
		{
			name:            "a new key ID after the interval verifies after one fetch",
			interval:        time.Nanosecond,
			afterFirstFetch: func(t *testing.T, iss *testissuer.Issuer) { addKey(t, iss, "second") },
			token:           func(t *testing.T, iss *testissuer.Issuer) string { return signedToken(t, iss, "second") },
			wantFetches:     2,
		},
		{
			name:        "a token that is not a JWS is refused without a fetch",
			interval:    time.Nanosecond,
			token:       func(*testing.T, *testissuer.Issuer) string { return "not.a-jws" },
			wantErr:     "parse the token",
			wantFetches: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			iss := startIssuer(t)
			if tt.beforeFirstFetch != nil {
				tt.beforeFirstFetch(t, iss)
			}
			keys := newTestKeySet(iss.JWKSURL(), tt.interval)
			first, err := iss.Token("alice", "toolgate")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := keys.VerifySignature(t.Context(), first); err != nil {
				t.Fatalf("a token signed with the newest key: %v", err)
			}
			if tt.afterFirstFetch != nil {
				tt.afterFirstFetch(t, iss)
			}
			_, err = keys.VerifySignature(t.Context(), tt.token(t, iss))
			checkErr(t, err, tt.wantErr)
			if got := iss.JWKSFetches(); got != tt.wantFetches {
				t.Errorf("the key set was fetched %d times, want %d", got, tt.wantFetches)
			}
		})
	}
}

func TestAFailedFetchCountsAsAFetch(t *testing.T) {
	tooLarge := `{"keys":[],"padding":"` + strings.Repeat("x", maxJWKSBytes) + `"}`
	tests := []struct {
		name    string
		status  int
		body    string
		wantErr string
	}{
		{"an issuer answering 503", http.StatusServiceUnavailable, "down", "the issuer answered 503 Service Unavailable"},
		{"a key set that is not JSON", http.StatusOK, "<html>", "decode the key set"},
		{"a key set larger than the limit", http.StatusOK, tooLarge, "the key set is larger than 1048576 bytes"},
		{"a key set without keys", http.StatusOK, `{"keys":[]}`, "the key set holds no keys"},
		{"a key set with only a shared secret", http.StatusOK, `{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}`, "the key set holds no key usable to verify tokens"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var fetches atomic.Int64
			server := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				fetches.Add(1)
				w.WriteHeader(tt.status)
				_, _ = w.Write([]byte(tt.body))
			}))
			t.Cleanup(server.Close)
			keys := newTestKeySet(server.URL, time.Hour)
			for i := range 3 {
				_, err := keys.VerifySignature(t.Context(), signES256(t, forgingKey(), "any"))
				checkErr(t, err, "fetch the keys of "+server.URL+": "+tt.wantErr)
				if t.Failed() {
					t.Fatalf("attempt %d", i+1)
				}
			}
			if got := fetches.Load(); got != 1 {
				t.Errorf("the key set was fetched %d times, want 1", got)
			}
		})
	}
}

func TestHeldKeysKeepWorkingWhileTheIssuerIsDown(t *testing.T) {
	key := forgingKey()
	doc, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "ec", Algorithm: string(jose.ES256), Use: "sig"}}})
	if err != nil {
		t.Fatal(err)
	}
	var down atomic.Bool
	var fetches atomic.Int64
	server := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fetches.Add(1)
		if down.Load() {
			http.Error(w, "down", http.StatusBadGateway)
			return
		}
		_, _ = w.Write(doc)
	}))
	t.Cleanup(server.Close)
	keys := newTestKeySet(server.URL, time.Nanosecond)
	if _, err := keys.VerifySignature(t.Context(), signES256(t, key, "ec")); err != nil {
		t.Fatalf("before the issuer went down: %v", err)
	}
	down.Store(true)
	_, err = keys.VerifySignature(t.Context(), signES256(t, key, "rotated"))
	checkErr(t, err, "the issuer answered 502 Bad Gateway")
	if _, err := keys.VerifySignature(t.Context(), signES256(t, key, "ec")); err != nil {
		t.Errorf("a held key after a failed fetch: %v", err)
	}
	if got := fetches.Load(); got != 2 {
		t.Errorf("the key set was fetched %d times, want 2", got)
	}
}

func TestARequestGoingAwayDoesNotFailTheFetchItStarted(t *testing.T) {
	iss := startIssuer(t)
	release := make(chan struct{})
	var fetches atomic.Int64
	// A proxy in front of the issuer that holds the first fetch until
	// released.
	server := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches.Add(1)
		<-release
		resp, err := http.Get(iss.JWKSURL())
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		var set json.RawMessage
		if err := json.NewDecoder(resp.Body).Decode(&set); err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		_, _ = w.Write(set)
	}))
	t.Cleanup(server.Close)
	keys := newTestKeySet(server.URL, time.Hour)
	token, err := iss.Token("alice", "toolgate")
	if err != nil {
		t.Fatal(err)
	}
	gone, cancel := context.WithCancel(t.Context())
	cancel()
	_, err = keys.VerifySignature(gone, token)
	checkErr(t, err, "wait for the keys of "+server.URL+": context canceled")
	close(release)
	if _, err := keys.VerifySignature(t.Context(), token); err != nil {
		t.Errorf("after the fetch ended: %v", err)
	}
	if got := fetches.Load(); got != 1 {
		t.Errorf("the key set was fetched %d times, want 1", got)
	}
}

func TestKeysThatCannotVerifyATokenAreSkipped(t *testing.T) {
	usable := `{"kty":"EC","crv":"P-256","kid":"ec","alg":"ES256","use":"sig",` +
		`"x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}`
	tests := []struct {
		name string
		key  string
	}{
		{"a shared secret", `{"kty":"oct","kid":"oct","k":"c2VjcmV0"}`},
		{"an encryption key", strings.Replace(usable, `"use":"sig"`, `"use":"enc"`, 1)},
		{"a key for an algorithm toolgate does not accept", strings.Replace(usable, `"alg":"ES256"`, `"alg":"ES256K"`, 1)},
		{"a key of a type go-jose does not know", `{"kty":"OKP","crv":"Ed448","kid":"ed448","x":"AAAA"}`},
		{"a malformed key", `{"kty":"RSA","kid":"rsa"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			keys, err := parseKeySet([]byte(`{"keys":[` + tt.key + `,` + usable + `]}`))
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			if len(keys) != 1 || keys[0].KeyID != "ec" || !keys[0].IsPublic() {
				t.Errorf("got %d keys (%+v), want only the public key ec", len(keys), keys)
			}
		})
	}
}

func startIssuer(t *testing.T) *testissuer.Issuer {
	t.Helper()
	iss, err := testissuer.Start()
	if err != nil {
		t.Fatalf("start the issuer: %v", err)
	}
	t.Cleanup(iss.Close)
	return iss
}

func addKey(t *testing.T, iss *testissuer.Issuer, kid string) {
	t.Helper()
	if err := iss.AddKey(kid); err != nil {
		t.Fatal(err)
	}
}

// signedToken is a token signed with the issuer's newest key under kid.
func signedToken(t *testing.T, iss *testissuer.Issuer, kid string) string {
	t.Helper()
	token, err := iss.SignedToken(nil, kid, "alice", "toolgate")
	if err != nil {
		t.Fatal(err)
	}
	return token
}

// checkErr fails t unless err contains want, or is nil when want is "".
func checkErr(t *testing.T, err error, want string) {
	t.Helper()
	switch {
	case want == "" && err != nil:
		t.Errorf("error %v, want none", err)
	case want != "" && err == nil:
		t.Errorf("no error, want one containing %q", want)
	case want != "" && !strings.Contains(err.Error(), want):
		t.Errorf("error %v\nwant one containing %q", err, want)
	}
}

func TestAKeySetOfTooManyKeysIsRefused(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	set := func(n int) []byte {
		keys := make([]jose.JSONWebKey, n)
		for i := range keys {
			keys[i] = jose.JSONWebKey{Key: &key.PublicKey, KeyID: fmt.Sprint(i), Algorithm: string(jose.ES256), Use: "sig"}
		}
		doc, err := json.Marshal(jose.JSONWebKeySet{Keys: keys})
		if err != nil {
			t.Fatal(err)
		}
		return doc
	}
	if keys, err := parseKeySet(set(maxKeysPerSet)); err != nil || len(keys) != maxKeysPerSet {
		t.Errorf("%d keys: %d parsed, error %v", maxKeysPerSet, len(keys), err)
	}
	if _, err := parseKeySet(set(maxKeysPerSet + 1)); err == nil || !strings.Contains(err.Error(), "more than") {
		t.Errorf("%d keys: error %v, want the set refused", maxKeysPerSet+1, err)
	}
}

// Keys fetched an hour ago are fetched again in the background: a key the
// issuer withdrew stops verifying, without a token with an unknown key ID
// to set it off.
func TestAWithdrawnKeyStopsVerifyingWithinAnHour(t *testing.T) {
	key := forgingKey()
	withKey, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "ec", Algorithm: string(jose.ES256), Use: "sig"}}})
	if err != nil {
		t.Fatal(err)
	}
	other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	withoutKey, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &other.PublicKey, KeyID: "next", Algorithm: string(jose.ES256), Use: "sig"}}})
	if err != nil {
		t.Fatal(err)
	}
	var withdrawn atomic.Bool
	var fetches atomic.Int64
	server := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		defer fetches.Add(1)
		if withdrawn.Load() {
			_, _ = w.Write(withoutKey)
			return
		}
		_, _ = w.Write(withKey)
	}))
	t.Cleanup(server.Close)
	var mu sync.Mutex
	now := time.Unix(1_700_000_000, 0)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	keys := newKeySet(server.URL, &http.Client{Timeout: DefaultOIDCTimeout}, time.Minute, clock, slog.New(slog.DiscardHandler))

	token := signES256(t, key, "ec")
	if _, err := keys.VerifySignature(t.Context(), token); err != nil {
		t.Fatal(err)
	}
	withdrawn.Store(true)
	mu.Lock()
	now = now.Add(keySetMaxAge - time.Second)
	mu.Unlock()
	if _, err := keys.VerifySignature(t.Context(), token); err != nil || fetches.Load() != 1 {
		t.Fatalf("within the hour: %v, %d fetches; want the held key and 1 fetch", err, fetches.Load())
	}
	mu.Lock()
	now = now.Add(time.Second)
	mu.Unlock()
	// The request that finds the keys stale is served with them, and
	// starts a fetch.
	if _, err := keys.VerifySignature(t.Context(), token); err != nil {
		t.Fatalf("the request that sets off the refresh: %v", err)
	}
	for deadline := time.Now().Add(10 * time.Second); fetches.Load() != 2; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d fetches after the hour, want 2", fetches.Load())
		}
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		keys.mu.Lock()
		done := keys.fetching == nil
		keys.mu.Unlock()
		if done {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the refresh did not end")
		}
	}
	if _, err := keys.VerifySignature(t.Context(), token); err == nil {
		t.Error("a withdrawn key still verifies after the refresh")
	}
}
