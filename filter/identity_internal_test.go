package filter

import (
	"testing"
	"time"
)

func TestAVerifiedTokenIsNeverCachedPastItsExpiry(t *testing.T) {
	shared, err := NewShared(SharedOptions{TokenCacheMaxAge: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	cache := shared.tokens
	now := time.Unix(1_700_000_000, 0)
	key := tokenKey{scope: "issuer", sum: [32]byte{1}}

	cache.add(key, caller{user: "alice"}, now.Add(time.Minute), now)
	if who, ok := cache.get(key, now.Add(59*time.Second)); !ok || who.user != "alice" {
		t.Fatalf("before expiry: got %q, %v; want alice, true", who.user, ok)
	}
	if _, ok := cache.get(key, now.Add(time.Minute)); ok {
		t.Errorf("at expiry the token is still cached")
	}
	if _, ok := cache.get(key, now.Add(30*time.Second)); ok {
		t.Errorf("an expired entry was not dropped")
	}
}

func TestAVerifiedTokenIsCachedNoLongerThanTheMaxAge(t *testing.T) {
	shared, err := NewShared(SharedOptions{TokenCacheMaxAge: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	cache := shared.tokens
	now := time.Unix(1_700_000_000, 0)
	key := tokenKey{scope: "issuer", sum: [32]byte{2}}
	cache.add(key, caller{user: "alice"}, now.Add(24*time.Hour), now)
	if _, ok := cache.get(key, now.Add(time.Minute)); ok {
		t.Errorf("the token outlived the cache's max age")
	}
}

func TestAVerifiedTokenIsCachedPerIssuerAudienceAndClaim(t *testing.T) {
	shared, err := NewShared(SharedOptions{})
	if err != nil {
		t.Fatal(err)
	}
	a := newAuthenticator(shared, OIDCConfig{Issuer: "https://i", Audience: "server-a", JWKSURL: "https://i/jwks"})
	b := newAuthenticator(shared, OIDCConfig{Issuer: "https://i", Audience: "server-b", JWKSURL: "https://i/jwks"})
	if a.cacheScope == b.cacheScope {
		t.Errorf("servers with different audiences share cached tokens")
	}
}

func TestTheCacheIsBounded(t *testing.T) {
	shared, err := NewShared(SharedOptions{TokenCacheSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_700_000_000, 0)
	for i := range 3 {
		shared.tokens.add(tokenKey{sum: [32]byte{byte(i)}}, caller{user: "u"}, now.Add(time.Hour), now)
	}
	if got := shared.tokens.entries.Len(); got != 2 {
		t.Errorf("the cache holds %d tokens, want 2", got)
	}
}
