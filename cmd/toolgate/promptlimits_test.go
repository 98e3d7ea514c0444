package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/toolgate/toolgate/internal/testgateway"
)

// refusals records the 429s an MCP client gets, with the JSON-RPC error
// code of each.
type refusals struct {
	mu    sync.Mutex
	codes []int
	token string
}

func (r *refusals) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	req.Header.Set("Authorization", "Bearer "+r.token)
	res, err := http.DefaultTransport.RoundTrip(req)
	if err != nil || res.StatusCode != http.StatusTooManyRequests {
		return res, err
	}
	body, _ := io.ReadAll(res.Body)
	_ = res.Body.Close()
	res.Body = io.NopCloser(bytes.NewReader(body))
	var msg struct {
		Error struct{ Code int } `json:"error"`
	}
	_ = json.Unmarshal(body, &msg)
	r.mu.Lock()
	r.codes = append(r.codes, msg.Error.Code)
	r.mu.Unlock()
	return res, nil
}

func (r *refusals) all() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]int(nil), r.codes...)
}

// prompts/get and resources/read are limited like tools through the real
// binary, on both protocol generations: a prompt's per-user bucket, and a
// resource template whose reads cost 2; what no entry names is not limited.
func TestPromptsAndResourcesAreLimitedLikeTools(t *testing.T) {
	issuer, _ := startIssuer(t)
	for _, tc := range []struct {
		transport, version string
		code               int // the refusal's JSON-RPC code
	}{
		{"stateless", "2026-07-28", 429},
		{"stateful", "2025-11-25", -32029},
	} {
		t.Run(tc.version, func(t *testing.T) {
			backend := listsBackend(t, tc.transport)
			g := testgateway.Start(t, func(port int) string {
				return testgateway.Config(port, backend, testgateway.OIDC(issuer.URL(), issuer.JWKSURL(), "limits")+`  rateLimiting:
    prompts:
    - name: review_code
      perUser: {maxTokens: 2, refillPeriod: 1h}
    resources:
    - uri: 'file:///docs/{name}'
      cost: 2
      perUser: {maxTokens: 3, refillPeriod: 1h}
`)
			})
			token, err := issuer.TokenWithClaims("alice", "limits", nil)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			seen := &refusals{token: token}
			var opts *mcp.ClientSessionOptions
			if tc.version != "2026-07-28" {
				opts = &mcp.ClientSessionOptions{ProtocolVersion: tc.version}
			}
			cs, err := mcp.NewClient(&mcp.Implementation{Name: "limits-client", Version: "v1.0.0"}, nil).
				Connect(ctx, &mcp.StreamableClientTransport{Endpoint: g.URL, HTTPClient: &http.Client{Transport: seen}}, opts)
			if err != nil {
				t.Fatalf("connect: %v", err)
			}
			defer func() { _ = cs.Close() }()
			if got := cs.InitializeResult().ProtocolVersion; got != tc.version {
				t.Fatalf("protocol %s, want %s", got, tc.version)
			}
			get := func(name string) error {
				_, err := cs.GetPrompt(ctx, &mcp.GetPromptParams{Name: name})
				return err
			}
			read := func(uri string) error {
				_, err := cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: uri})
				return err
			}
			for i, step := range []struct {
				what    string
				do      func() error
				refused bool
			}{
				{"review_code", func() error { return get("review_code") }, false},
				{"review_code", func() error { return get("review_code") }, false},
				{"review_code, over its bucket", func() error { return get("review_code") }, true},
				{"summarize, no entry", func() error { return get("summarize") }, false},
				{"summarize, no entry", func() error { return get("summarize") }, false},
				{"summarize, no entry", func() error { return get("summarize") }, false},
				{"the guide, costs 2 of 3", func() error { return read("file:///docs/guide.md") }, false},
				{"the guide again, 1 left", func() error { return read("file:///docs/guide.md") }, true},
				{"keys, no entry", func() error { return read("file:///secrets/keys.txt") }, false},
			} {
				err := step.do()
				switch {
				case step.refused && (err == nil || !strings.Contains(err.Error(), "Too Many Requests")):
					t.Errorf("step %d, %s: %v, want it refused with 429", i+1, step.what, err)
				case !step.refused && err != nil:
					t.Errorf("step %d, %s: %v", i+1, step.what, err)
				}
			}
			if codes := seen.all(); len(codes) != 2 || codes[0] != tc.code || codes[1] != tc.code {
				t.Errorf("the 429s carried JSON-RPC codes %v, want two of %d", codes, tc.code)
			}
		})
	}
}
