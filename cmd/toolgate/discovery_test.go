package main

import (
	"encoding/json"
	"net/http"
	"regexp"
	"strings"
	"testing"
)

var resourceMetadataParam = regexp.MustCompile(`resource_metadata="([^"]+)"`)

// A client that knows only the gateway's URL finds, from the 401, the
// resource metadata, the issuer in it and the issuer's configuration; its
// calls pass with a token for an audience the MCPServer accepts.
func TestA401LeadsAClientToTheIssuerOfItsTokens(t *testing.T) {
	issuer, _ := startIssuer(t)
	backend := startBackend(t)
	r := startReplica(t, issuer, backend)

	req, err := http.NewRequest(http.MethodPost, r.URL, strings.NewReader(toolCall(1, "expensive_tool")))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	challenge := res.Header.Get("WWW-Authenticate")
	t.Logf("HTTP %d\nWWW-Authenticate: %s", res.StatusCode, challenge)
	m := resourceMetadataParam.FindStringSubmatch(challenge)
	if res.StatusCode != http.StatusUnauthorized || m == nil {
		t.Fatalf("status %d, WWW-Authenticate %q: want 401 with resource_metadata", res.StatusCode, challenge)
	}
	wantMetadata := strings.Replace(r.URL, "/mcp", "/.well-known/oauth-protected-resource/mcp", 1)
	if m[1] != wantMetadata {
		t.Errorf("resource_metadata = %s, want %s", m[1], wantMetadata)
	}

	var metadata struct {
		Resource               string   `json:"resource"`
		AuthorizationServers   []string `json:"authorization_servers"`
		BearerMethodsSupported []string `json:"bearer_methods_supported"`
	}
	getJSON(t, m[1], &metadata)
	t.Logf("%s: %+v", m[1], metadata)
	// RFC 9728 section 3.3: the resource is the URL the metadata URL was
	// derived from.
	if metadata.Resource != r.URL {
		t.Errorf("resource = %q, want %q", metadata.Resource, r.URL)
	}
	if len(metadata.AuthorizationServers) != 1 || metadata.AuthorizationServers[0] != issuer.URL() {
		t.Fatalf("authorization_servers = %v, want [%s]", metadata.AuthorizationServers, issuer.URL())
	}
	if len(metadata.BearerMethodsSupported) != 1 || metadata.BearerMethodsSupported[0] != "header" {
		t.Errorf("bearer_methods_supported = %v, want [header]", metadata.BearerMethodsSupported)
	}

	var configuration struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	getJSON(t, metadata.AuthorizationServers[0]+"/.well-known/openid-configuration", &configuration)
	if configuration.Issuer != issuer.URL() {
		t.Errorf("the authorization server's configuration names issuer %q, want %q", configuration.Issuer, issuer.URL())
	}

	// The MCPServer names no resourceURL: the URL in the metadata is the
	// one the client used (its Host), which it could have chosen to match
	// a token minted for another service. Only the configured audience is
	// accepted (the OAuth test accepts the resource, once configured).
	forResource, err := issuer.Token("alice", metadata.Resource)
	if err != nil {
		t.Fatal(err)
	}
	if code := post(t, r.URL, forResource, http.MethodPost, toolCall(2, "expensive_tool")); code != http.StatusUnauthorized {
		t.Errorf("a call with a token for the URL the client used: status %d, want 401", code)
	}
	forAudience, err := issuer.Token("alice", "limits")
	if err != nil {
		t.Fatal(err)
	}
	if code := post(t, r.URL, forAudience, http.MethodPost, toolCall(3, "expensive_tool")); code != http.StatusOK {
		t.Errorf("a call with a token for the configured audience: status %d, want 200", code)
	}
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	res, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: status %d", url, res.StatusCode)
	}
	if err := json.NewDecoder(res.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
}
