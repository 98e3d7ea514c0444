package gateway

import (
	"bytes"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/toolgate/toolgate/filter"
	"github.com/toolgate/toolgate/filter/authz"
	"github.com/toolgate/toolgate/filter/limiter"
)

// fullConfig sets every field of every type a Config holds, somewhere.
// Every value a redacted Config must not show contains "secret".
func fullConfig(t *testing.T) *Config {
	t.Helper()
	certs := testCertificates(t, "mcp.example.com")
	policy := &filter.Policy{
		Server:               "team-a/github",
		Auth:                 &filter.OIDCConfig{Issuer: "https://issuer.example.com", Audience: "toolgate", JWKSURL: "https://issuer.example.com/jwks", UserClaim: "email", AllowInsecureHTTP: true},
		ForwardAuthorization: true,
		ResourceURL:          "https://mcp.example.com/github",
		Scopes:               []string{"tools"},
		Authorization: &authz.Policy{Rules: []authz.Rule{
			{Name: "engineers", Tools: []string{"search_*"}, Prompts: []string{"review"}, Resources: []string{"file:///docs/*"}, When: "'engineering' in claims.groups", Scopes: []string{"repo:read"}},
		}},
		AuditArguments: true,
		// Encoded here only: a policy sets one of them.
		BackendAuth: &filter.BackendAuth{
			Header:            &filter.StaticHeader{Name: "X-API-Key", Value: "backend-secret"},
			ClientCredentials: &filter.OAuth2Client{TokenURL: "https://as.example/token", ClientID: "toolgate", ClientSecret: "client-secret", Scopes: []string{"repo"}, Audience: "https://backend.example", AllowInsecureHTTP: true},
			TokenExchange:     &filter.OAuth2Client{TokenURL: "https://as.example/token", ClientID: "toolgate", ClientSecret: "exchange-secret", Audience: "github"},
		},
		Shadow:               true,
		GlobalQuota:          &filter.Quota{Max: 100000, Window: "month"},
		PerUserQuota:         &filter.Quota{Max: 1000, Window: "day", Shadow: true},
		TimeZone:             "Europe/Paris",
		GlobalMaxConcurrent:  50,
		PerUserMaxConcurrent: 3,
		MaxConcurrentShadow:  true,
		ConcurrencyLease:     "2m0s",
		Global:               &limiter.Limit{MaxTokens: 1000, RefillPeriod: time.Minute},
		PerUser:              &limiter.Limit{MaxTokens: 100, RefillPeriod: 1500 * time.Millisecond, Shadow: true},
		Tools: map[string]filter.ToolLimits{
			"expensive_tool": {Global: &limiter.Limit{MaxTokens: 50, RefillPeriod: time.Hour}, PerUser: &limiter.Limit{MaxTokens: 10, RefillPeriod: time.Minute}},
			"other_tool":     {PerUser: &limiter.Limit{MaxTokens: 5, RefillPeriod: time.Second}, Cost: 3, GlobalQuota: &filter.Quota{Max: 50, Window: "week"}, PerUserQuota: &filter.Quota{Max: 9, Window: "hour"}, GlobalMaxConcurrent: 4, PerUserMaxConcurrent: 2, MaxConcurrentShadow: true},
		},
		Prompts:   map[string]filter.ToolLimits{"review": {PerUser: &limiter.Limit{MaxTokens: 3, RefillPeriod: time.Hour}, Cost: 2}},
		Resources: map[string]filter.ToolLimits{"file:///docs/{name}": {Global: &limiter.Limit{MaxTokens: 9, RefillPeriod: time.Minute}}},
		Methods:   map[string]filter.ToolLimits{"completion/complete": {PerUser: &limiter.Limit{MaxTokens: 20, RefillPeriod: time.Minute}, GlobalMaxConcurrent: 2}},
	}
	backendFilter := Filter{Type: FilterRequestHeaderModifier, RequestHeaderModifier: &HeaderModifier{
		Set: []Header{{Name: "X-Backend-Key", Value: "secret-backend"}},
	}}
	clientCert := testCertificates(t, "gateway.example.com")[0]
	return &Config{
		Version:                  "42",
		BackendClientCertificate: &clientCert,
		Listeners: []Listener{{
			Name:         "team-a/gw/https",
			Address:      "192.0.2.1",
			Port:         8443,
			Protocol:     ProtocolHTTPS,
			Hostname:     "*.example.com",
			Certificates: certs,
			ClientValidation: &ClientValidation{
				CACertificatesPEM: certs[0].CertificatePEM, AllowInsecureFallback: true,
			},
			VirtualHosts: []VirtualHost{{
				Hostnames: []string{"mcp.example.com"},
				Routes: []Route{{
					Namespace:         "team-a",
					Name:              "github",
					CreationTimestamp: time.Date(2025, 6, 18, 12, 30, 45, 123456789, time.UTC),
					Rules: []Rule{{
						Name: "tools",
						Matches: []Match{{
							Path:        PathMatch{Type: PathMatchPathPrefix, Value: "/github"},
							Headers:     []HeaderMatch{{Type: MatchExact, Name: "X-Tenant", Value: "secret-tenant"}},
							QueryParams: []QueryParamMatch{{Type: MatchRegularExpression, Name: "token", Value: "secret-.*"}},
							Method:      "POST",
						}},
						Filters: []Filter{
							{Type: FilterRequestHeaderModifier, RequestHeaderModifier: &HeaderModifier{
								Set:    []Header{{Name: "Authorization", Value: "Bearer secret-set"}},
								Add:    []Header{{Name: "X-Api-Key", Value: "secret-add"}},
								Remove: []string{"X-Drop"},
							}},
							{Type: FilterResponseHeaderModifier, ResponseHeaderModifier: &HeaderModifier{
								Set: []Header{{Name: "Set-Cookie", Value: "secret-cookie"}},
							}},
							{Type: FilterURLRewrite, URLRewrite: &URLRewrite{
								Hostname: "github.internal",
								Path:     &PathModifier{Type: ReplacePrefixMatch, ReplacePrefixMatch: "/", ReplaceFullPath: "/mcp"},
							}},
							{Type: FilterExtensionRef, ExtensionRef: &ExtensionRef{Group: "toolgate.dev", Kind: "MCPServer", Name: "github", MCPServer: policy}},
							{Type: FilterCORS, CORS: &CORS{
								AllowOrigins: []string{"https://app.example.com", "http://localhost:6274"}, AllowCredentials: true,
								AllowMethods: []string{"POST", "GET", "DELETE"}, AllowHeaders: []string{"Authorization", "Content-Type"},
								ExposeHeaders: []string{"Mcp-Session-Id", "WWW-Authenticate"}, MaxAge: 600,
							}},
							{Type: FilterRequestMirror, RequestMirror: &RequestMirror{
								Backend:  Backend{Name: "team-a/github-shadow:8080", Weight: 1, Endpoints: []string{"10.0.0.3:8080"}},
								Fraction: &Fraction{Numerator: 1, Denominator: 4},
							}},
						},
						Backends: []Backend{{
							Name:                "team-a/github-mcp:8080",
							Weight:              3,
							Endpoints:           []string{"10.0.0.1:8080", "10.0.0.2:8080"},
							Scheme:              "https",
							Invalid:             true,
							Filters:             []Filter{backendFilter},
							EndpointPath:        "/mcp",
							EndpointPathGETOnly: true,
							Protocol:            BackendProtocolH2C,
							// Encoded here only: a policy sets roots of one kind.
							TLS: &BackendTLS{
								Policy: "team-a/github-tls", ServerName: "github.example.com",
								CACertificatesPEM: certs[0].CertificatePEM, SystemRoots: true,
								SubjectAltNames: []SubjectAltName{{Hostname: "github.example.com"}, {URI: "spiffe://example.com/github"}},
							},
						}},
						Timeouts: Timeouts{Request: 10 * time.Second, BackendRequest: 2500 * time.Millisecond},
						Retry:    &Retry{Codes: []int{500, 503}, Attempts: 2, Backoff: "100ms"},
					}, {
						Filters: []Filter{{Type: FilterRequestRedirect, RequestRedirect: &Redirect{
							Scheme: "https", Hostname: "example.com", Port: 8443, StatusCode: 301,
							Path: &PathModifier{Type: ReplaceFullPath, ReplaceFullPath: "/new"},
						}}},
					}},
				}},
			}},
		}},
	}
}

func TestAConfigRoundTripsThroughItsWireForm(t *testing.T) {
	cfg := fullConfig(t)
	if missing := unsetFields(cfg); len(missing) > 0 {
		t.Fatalf("fullConfig leaves fields unset, so their encoding is untested: %s", strings.Join(missing, ", "))
	}
	data, err := EncodeConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeConfig(data)
	if err != nil {
		t.Fatalf("DecodeConfig(EncodeConfig(cfg)): %v\n%s", err, data)
	}
	if !reflect.DeepEqual(got, cfg) {
		t.Errorf("the decoded config differs from the encoded one:\n got %+v\nwant %+v", got, cfg)
	}
	again, err := EncodeConfig(got)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again, data) {
		t.Errorf("encoding an equal config gave other bytes:\n%s\n%s", data, again)
	}
	for _, want := range []string{`"request":"10s"`, `"backendRequest":"2.5s"`, `"refillPeriod":"1.5s"`, `"creationTimestamp":"2025-06-18T12:30:45.123456789Z"`} {
		if !bytes.Contains(data, []byte(want)) {
			t.Errorf("the wire form lacks %s:\n%s", want, data)
		}
	}
}

func TestZeroFieldsAreLeftOutOfTheWireForm(t *testing.T) {
	data, err := EncodeConfig(oneRoute(Rule{Backends: []Backend{{Name: "b", Weight: 0}}}))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"listeners":[{"name":"web","address":"127.0.0.1","port":0,"protocol":"HTTP","virtualHosts":[{"routes":[{"namespace":"ns","name":"r","rules":[{"backends":[{"name":"b","weight":0}]}]}]}]}]}`
	if string(data) != want {
		t.Errorf("EncodeConfig =\n%s\nwant\n%s", data, want)
	}
}

func TestDecodeConfigRejectsWhatIsNotAConfig(t *testing.T) {
	rule := func(r string) string {
		return `{"listeners":[{"name":"web","port":80,"protocol":"HTTP","virtualHosts":[{"routes":[{"namespace":"ns","name":"r","rules":[` + r + `]}]}]}]}`
	}
	cases := []struct {
		name string
		data string
		want string
	}{
		{"nothing", "", "want a JSON object"},
		{"null", "null", "want a JSON object"},
		{"a list", "[]", "want a JSON object"},
		{"a cut-off object", `{"listeners":[`, "unexpected end"},
		{"two objects", `{} {}`, "after top-level value"},
		{"a field of the wrong type", `{"listeners":{}}`, "cannot unmarshal"},
		{"a timeout that is not a duration", rule(`{"timeouts":{"request":"soon"}}`), `timeouts: request: time: invalid duration "soon"`},
		{"a timeout written as a number", rule(`{"timeouts":{"request":10}}`), "timeouts:"},
		{"a refill period that is not a duration", rule(`{"filters":[{"type":"ExtensionRef","extensionRef":{"group":"toolgate.dev","kind":"MCPServer","name":"m","mcpServer":{"server":"ns/m","global":{"maxTokens":1,"refillPeriod":"1 minute"}}}}]}`), "refillPeriod"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := DecodeConfig([]byte(tc.data))
			if err == nil {
				t.Fatalf("DecodeConfig accepted %q as %+v", tc.data, cfg)
			}
			if !strings.HasPrefix(err.Error(), "decode gateway config: ") || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q, want it to say decode gateway config and %q", err, tc.want)
			}
		})
	}
}

func TestEncodeConfigRefusesNil(t *testing.T) {
	if _, err := EncodeConfig(nil); err == nil {
		t.Error("EncodeConfig(nil) succeeded")
	}
}

func TestRedactedHidesKeysAndHeaderValuesAndKeepsTheRest(t *testing.T) {
	cfg := fullConfig(t)
	before, err := EncodeConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r := cfg.Redacted()
	data, err := EncodeConfig(r)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(data, []byte("secret")) {
		t.Errorf("the redacted config shows a header or query parameter value:\n%s", data)
	}
	if bytes.Contains(data, []byte("PRIVATE KEY")) {
		t.Errorf("the redacted config shows a private key:\n%s", data)
	}
	for _, name := range []string{"Authorization", "X-Api-Key", "X-Drop", "Set-Cookie", "X-Backend-Key", "X-Tenant", "token"} {
		if !bytes.Contains(data, []byte(`"`+name+`"`)) {
			t.Errorf("the redacted config does not name %s", name)
		}
	}
	l := r.Listeners[0]
	if c := l.Certificates[0]; c.PrivateKeyPEM != redacted || c.CertificatePEM != cfg.Listeners[0].Certificates[0].CertificatePEM {
		t.Errorf("redacted certificate = %+v, want the certificate kept and the key %q", c, redacted)
	}
	if c := r.BackendClientCertificate; c.PrivateKeyPEM != redacted || c.CertificatePEM != cfg.BackendClientCertificate.CertificatePEM {
		t.Errorf("redacted backend client certificate = %+v, want the certificate kept and the key %q", c, redacted)
	}
	rule := l.VirtualHosts[0].Routes[0].Rules[0]
	if m := rule.Matches[0]; m.Headers[0].Value != redacted || m.QueryParams[0].Value != redacted || m.QueryParams[0].Type != MatchRegularExpression {
		t.Errorf("redacted match = %+v, want values redacted and types kept", m)
	}
	served := cfg.Listeners[0].VirtualHosts[0].Routes[0].Rules[0].Filters[3].ExtensionRef.MCPServer
	want := served.Clone()
	want.BackendAuth = served.BackendAuth.Redacted()
	if ref := rule.Filters[3].ExtensionRef; !reflect.DeepEqual(ref.MCPServer, want) {
		t.Errorf("redacted policy = %+v, want it unchanged but for its backend credentials", ref.MCPServer)
	}
	if b := rule.Filters[3].ExtensionRef.MCPServer.BackendAuth; b.Header.Value != redacted || b.ClientCredentials.ClientSecret != redacted ||
		b.TokenExchange.ClientSecret != redacted || b.ClientCredentials.ClientID != "toolgate" || served.BackendAuth.Header.Value != "backend-secret" {
		t.Errorf("redacted backend credentials %+v, served %+v", b, served.BackendAuth)
	}

	// A deep copy: changing it leaves the served config as it was.
	rule.Backends[0].Endpoints[0] = "changed"
	rule.Filters[3].ExtensionRef.MCPServer.Tools["other_tool"].PerUser.MaxTokens = 1
	rule.Filters[2].URLRewrite.Path.ReplaceFullPath = "/changed"
	rule.Filters[4].CORS.AllowOrigins[0] = "https://changed.example"
	rule.Filters[5].RequestMirror.Backend.Endpoints[0] = "changed"
	rule.Filters[5].RequestMirror.Fraction.Numerator = 3
	rule.Backends[0].TLS.SubjectAltNames[0].Hostname = "changed.example"
	rule.Backends[0].TLS.ServerName = "changed.example"
	l.VirtualHosts[0].Hostnames[0] = "changed"
	after, err := EncodeConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Errorf("Redacted or a change to its copy changed the config:\nbefore %s\nafter  %s", before, after)
	}
}

// unsetFields names every field, as Type.Field, of the types v holds that
// is zero wherever it occurs in v.
func unsetFields(v any) []string {
	want, set := map[string]bool{}, map[string]bool{}
	fieldsOf(reflect.TypeOf(v), want)
	fieldsSet(reflect.ValueOf(v), set)
	var missing []string
	for f := range want {
		if !set[f] {
			missing = append(missing, f)
		}
	}
	slices.Sort(missing)
	return missing
}

var timeType = reflect.TypeFor[time.Time]()

func fieldsOf(t reflect.Type, out map[string]bool) {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Map {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct || t == timeType {
		return
	}
	for i := range t.NumField() {
		f := t.Field(i)
		key := t.String() + "." + f.Name
		if out[key] {
			return // seen: types recur (a backend's filters)
		}
		out[key] = true
		fieldsOf(f.Type, out)
	}
}

func fieldsSet(v reflect.Value, out map[string]bool) {
	switch v.Kind() {
	case reflect.Pointer:
		if !v.IsNil() {
			fieldsSet(v.Elem(), out)
		}
	case reflect.Slice:
		for i := range v.Len() {
			fieldsSet(v.Index(i), out)
		}
	case reflect.Map:
		for it := v.MapRange(); it.Next(); {
			fieldsSet(it.Value(), out)
		}
	case reflect.Struct:
		if v.Type() == timeType {
			return
		}
		for i := range v.NumField() {
			if f := v.Field(i); !f.IsZero() {
				out[v.Type().String()+"."+v.Type().Field(i).Name] = true
				fieldsSet(f, out)
			}
		}
	}
}

func TestMCPServersYieldsThePolicyOfEveryResolvedReference(t *testing.T) {
	backend := Backend{Name: "b", Weight: 1, Filters: []Filter{resolvedRef("jira")}}
	cfg := oneRoute(
		Rule{Filters: []Filter{resolvedRef("github"), {Type: FilterExtensionRef, ExtensionRef: &ExtensionRef{Name: "missing"}}}},
		Rule{Backends: []Backend{backend}},
	)
	var got []string
	for p := range cfg.MCPServers() {
		got = append(got, p.Server)
	}
	if want := []string{"ns/github", "ns/jira"}; !slices.Equal(got, want) {
		t.Errorf("MCPServers = %q, want %q", got, want)
	}
	for range cfg.MCPServers() {
		break // stopping early must not panic
	}
}
