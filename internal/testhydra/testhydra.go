// Package testhydra runs Ory Hydra, a real OAuth 2.0 and OpenID Connect
// authorization server, for tests: `hydra serve all --dev` with an in-memory
// database and JWT access tokens on free loopback ports, and beside it a
// login and consent app that accepts every challenge through Hydra's admin
// API as one subject, granting the scopes and audience asked for. The binary
// is the one hack/hydra.sh builds and caches.
package testhydra

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/toolgate/toolgate/internal/testproc"
)

// DefaultSubject is the subject the login app accepts logins as until
// SetSubject names another.
const DefaultSubject = "hydra-user"

// startTimeout bounds how long Start waits for Hydra to be ready: it runs
// its migrations into memory first, on a machine that may be busy with
// -race builds.
const startTimeout = time.Minute

// logTail is how many lines of Hydra's log a failed test shows.
const logTail = 60

// Server is a running Hydra with its login and consent app. It is safe for
// concurrent use.
type Server struct {
	public string // base URL of the public port: the issuer
	admin  string // base URL of the admin port
	http   *http.Client

	mu       sync.Mutex
	subject  string
	consents []Consent
	failures []string // what the login and consent app could not do
}

// Consent is one authorization the consent app accepted: what the client
// asked for, all of which was granted.
type Consent struct {
	Subject  string
	ClientID string
	Scopes   []string // requested and granted
	Audience []string // requested and granted as the access token's aud
}

// Start runs Hydra and the login and consent app until the test ends. The
// binary is $TOOLGATE_HYDRA, or else the one hack/hydra.sh prints (building
// it on its first run). Hydra's output goes to a file whose end is logged
// when the test fails.
func Start(t testing.TB) *Server {
	t.Helper()
	binary := hydraBinary(t)
	ports := testproc.FreePorts(t, 2)
	publicPort, adminPort := ports[0], ports[1]
	s := &Server{
		public:  fmt.Sprintf("http://127.0.0.1:%d", publicPort),
		admin:   fmt.Sprintf("http://127.0.0.1:%d", adminPort),
		http:    &http.Client{Timeout: 30 * time.Second},
		subject: DefaultSubject,
	}
	app := httptest.NewServer(s.loginConsentApp())
	t.Cleanup(app.Close)

	logPath := filepath.Join(t.TempDir(), "hydra.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(binary, "serve", "all", "--dev", "--sqa-opt-out")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Env = append(inheritedEnv(),
		"DSN=memory",
		"STRATEGIES_ACCESS_TOKEN=jwt",
		"SECRETS_SYSTEM="+rand.Text(), // keys in the memory database are encrypted with it
		"URLS_SELF_ISSUER="+s.public,
		"URLS_LOGIN="+app.URL+"/login",
		"URLS_CONSENT="+app.URL+"/consent",
		"SERVE_PUBLIC_HOST=127.0.0.1",
		fmt.Sprintf("SERVE_PUBLIC_PORT=%d", publicPort),
		"SERVE_ADMIN_HOST=127.0.0.1",
		fmt.Sprintf("SERVE_ADMIN_PORT=%d", adminPort),
		"OAUTH2_EXPOSE_INTERNAL_ERRORS=true",
		"SQA_OPT_OUT=true", // no telemetry: traffic stays on loopback
	)
	testproc.DieWithParent(cmd)
	if err := cmd.Start(); err != nil {
		_ = logFile.Close() // a log: nothing to do when it fails
		t.Fatalf("start %s: %v", binary, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		_ = logFile.Close() // a log: nothing to do when it fails
		if t.Failed() {
			s.mu.Lock()
			failures := strings.Join(s.failures, "\n  ")
			s.mu.Unlock()
			if failures != "" {
				t.Logf("the login and consent app failed:\n  %s", failures)
			}
			t.Logf("the end of Hydra's log (%s serve all --dev):\n%s", binary, tail(logPath, logTail))
		}
	})

	deadline := time.Now().Add(startTimeout)
	for !s.ready() {
		select {
		case <-exited:
			t.Fatalf("hydra exited before it was ready (%v):\n%s", cmd.ProcessState, tail(logPath, logTail))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("hydra was not ready within %s:\n%s", startTimeout, tail(logPath, logTail))
		}
		time.Sleep(20 * time.Millisecond)
	}
	return s
}

// ready reports whether Hydra answers /health/ready and serves keys: Hydra
// makes its signing keys on the first request that needs them, and asking
// here keeps that out of the first token's request.
func (s *Server) ready() bool {
	for _, u := range []string{s.admin + "/health/ready", s.JWKSURL()} {
		res, err := s.http.Get(u)
		if err != nil {
			return false
		}
		var keys struct {
			Keys []json.RawMessage `json:"keys"`
		}
		err = json.NewDecoder(res.Body).Decode(&keys)
		res.Body.Close()
		if res.StatusCode != http.StatusOK || err != nil || (u == s.JWKSURL() && len(keys.Keys) == 0) {
			return false
		}
	}
	return true
}

// IssuerURL is Hydra's issuer: the base URL of its public port, as in the
// tokens' iss and the discovery document.
func (s *Server) IssuerURL() string { return s.public }

// JWKSURL is where Hydra publishes the keys that verify its tokens.
func (s *Server) JWKSURL() string { return s.public + "/.well-known/jwks.json" }

// MetadataURL is Hydra's OpenID Connect discovery document. Hydra serves no
// /.well-known/oauth-authorization-server.
func (s *Server) MetadataURL() string { return s.public + "/.well-known/openid-configuration" }

// AuthorizationURL is Hydra's authorization endpoint.
func (s *Server) AuthorizationURL() string { return s.public + "/oauth2/auth" }

// TokenURL is Hydra's token endpoint.
func (s *Server) TokenURL() string { return s.public + "/oauth2/token" }

// SetSubject makes the login app accept the next logins as subject: the
// sub of the tokens issued after them.
func (s *Server) SetSubject(subject string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.subject = subject
}

// Consents are the authorizations the consent app accepted, in order.
func (s *Server) Consents() []Consent {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Consent(nil), s.consents...)
}

// ClientSpec is an OAuth client to register with Hydra.
type ClientSpec struct {
	Name          string
	GrantTypes    []string // authorization_code, client_credentials, refresh_token
	ResponseTypes []string // code; none for client_credentials only
	RedirectURIs  []string
	Scopes        []string // the scopes the client may ask for
	Audience      []string // the audiences the client may ask for
	// Public makes a client without a secret (token_endpoint_auth_method
	// none), as a native app with PKCE is; otherwise the client has a
	// secret and sends it with HTTP Basic authentication.
	Public bool
}

// CreateClient registers spec with Hydra's admin API and returns the
// client's id and secret ("" for a public client).
func (s *Server) CreateClient(t testing.TB, spec ClientSpec) (id, secret string) {
	t.Helper()
	method := "client_secret_basic"
	if spec.Public {
		method = "none"
	}
	body := map[string]any{
		"client_name":                spec.Name,
		"grant_types":                spec.GrantTypes,
		"response_types":             spec.ResponseTypes,
		"redirect_uris":              spec.RedirectURIs,
		"scope":                      strings.Join(spec.Scopes, " "),
		"audience":                   spec.Audience,
		"token_endpoint_auth_method": method,
	}
	var client struct {
		ID     string `json:"client_id"`
		Secret string `json:"client_secret"`
	}
	if err := s.adminCall(t.Context(), http.MethodPost, "/admin/clients", body, &client); err != nil {
		t.Fatalf("create the client %q: %v", spec.Name, err)
	}
	if client.ID == "" || (!spec.Public && client.Secret == "") {
		t.Fatalf("Hydra created the client %q without an id or secret: %+v", spec.Name, client)
	}
	return client.ID, client.Secret
}

// ClientCredentialsToken asks Hydra's token endpoint for an access token
// for the client with the client credentials grant, and returns it.
func (s *Server) ClientCredentialsToken(t testing.TB, id, secret string, scopes, audience []string) string {
	t.Helper()
	form := url.Values{"grant_type": {"client_credentials"}}
	if len(scopes) > 0 {
		form.Set("scope", strings.Join(scopes, " "))
	}
	if len(audience) > 0 {
		form.Set("audience", strings.Join(audience, " "))
	}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, s.TokenURL(), strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(secret)) // RFC 6749 section 2.3.1
	res, err := s.http.Do(req)
	if err != nil {
		t.Fatalf("ask Hydra for a token: %v", err)
	}
	defer res.Body.Close()
	data, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("read Hydra's token response: %v", err)
	}
	var token struct {
		AccessToken string `json:"access_token"`
	}
	if res.StatusCode != http.StatusOK || json.Unmarshal(data, &token) != nil || token.AccessToken == "" {
		t.Fatalf("Hydra's token endpoint answered %d: %s", res.StatusCode, data)
	}
	return token.AccessToken
}

// loginConsentApp is the app Hydra sends browsers to (URLS_LOGIN,
// URLS_CONSENT): it accepts every login as the current subject and every
// consent with all it asks for, and sends the browser back to Hydra.
func (s *Server) loginConsentApp() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /login", func(w http.ResponseWriter, r *http.Request) {
		challenge := r.URL.Query().Get("login_challenge")
		var login struct {
			Skip    bool   `json:"skip"`
			Subject string `json:"subject"`
		}
		s.mu.Lock()
		subject := s.subject
		s.mu.Unlock()
		redirect, err := s.accept(r.Context(), "login", challenge, &login, func() any {
			if login.Skip {
				subject = login.Subject // Hydra knows the browser's user already
			}
			return map[string]any{"subject": subject}
		})
		s.finish(w, r, "accept the login", redirect, err)
	})
	mux.HandleFunc("GET /consent", func(w http.ResponseWriter, r *http.Request) {
		challenge := r.URL.Query().Get("consent_challenge")
		var consent struct {
			Subject  string   `json:"subject"`
			Scopes   []string `json:"requested_scope"`
			Audience []string `json:"requested_access_token_audience"`
			Client   struct {
				ID string `json:"client_id"`
			} `json:"client"`
		}
		redirect, err := s.accept(r.Context(), "consent", challenge, &consent, func() any {
			return map[string]any{
				"grant_scope":                 consent.Scopes,
				"grant_access_token_audience": consent.Audience,
				"remember":                    false,
			}
		})
		if err == nil {
			s.mu.Lock()
			s.consents = append(s.consents, Consent{Subject: consent.Subject, ClientID: consent.Client.ID, Scopes: consent.Scopes, Audience: consent.Audience})
			s.mu.Unlock()
		}
		s.finish(w, r, "accept the consent", redirect, err)
	})
	return mux
}

// accept reads the login or consent request of challenge into request,
// accepts it with what acceptance makes of it, and returns where Hydra
// sends the browser next.
func (s *Server) accept(ctx context.Context, flow, challenge string, request any, acceptance func() any) (string, error) {
	if challenge == "" {
		return "", fmt.Errorf("no %s_challenge in the request", flow)
	}
	path := "/admin/oauth2/auth/requests/" + flow
	query := "?" + url.Values{flow + "_challenge": {challenge}}.Encode()
	if err := s.adminCall(ctx, http.MethodGet, path+query, nil, request); err != nil {
		return "", err
	}
	var accepted struct {
		RedirectTo string `json:"redirect_to"`
	}
	if err := s.adminCall(ctx, http.MethodPut, path+"/accept"+query, acceptance(), &accepted); err != nil {
		return "", err
	}
	if accepted.RedirectTo == "" {
		return "", fmt.Errorf("Hydra accepted the %s without saying where to go next", flow)
	}
	return accepted.RedirectTo, nil
}

// finish sends the browser to redirect, or answers 500 and notes why not.
func (s *Server) finish(w http.ResponseWriter, r *http.Request, what, redirect string, err error) {
	if err != nil {
		s.mu.Lock()
		s.failures = append(s.failures, fmt.Sprintf("%s (%s): %v", what, r.URL, err))
		s.mu.Unlock()
		http.Error(w, fmt.Sprintf("%s: %v", what, err), http.StatusInternalServerError)
		return
	}
	http.Redirect(w, r, redirect, http.StatusFound)
}

// adminCall sends body (when not nil) as JSON to Hydra's admin API and
// decodes the answer into out.
func (s *Server) adminCall(ctx context.Context, method, path string, body, out any) error {
	var reader io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return err
		}
		reader = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, s.admin+path, reader)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := s.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer res.Body.Close()
	data, err := io.ReadAll(res.Body)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if res.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: Hydra answered %d: %s", method, path, res.StatusCode, data)
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%s %s: %w: %s", method, path, err, data)
	}
	return nil
}

var (
	binaryOnce sync.Once
	binaryPath string
	binaryErr  error
)

// hydraBinary is $TOOLGATE_HYDRA, which the Makefile's test target sets,
// or else the path hack/hydra.sh prints: it builds Hydra into the cache on
// its first run and reuses it after. It runs once per test binary.
func hydraBinary(t testing.TB) string {
	t.Helper()
	binaryOnce.Do(func() {
		binaryPath = os.Getenv("TOOLGATE_HYDRA")
		if binaryPath == "" {
			binaryPath, binaryErr = buildWithScript()
			if binaryErr != nil {
				return
			}
		}
		info, err := os.Stat(binaryPath)
		if err == nil && (info.IsDir() || info.Mode()&0o111 == 0) {
			err = errors.New("not an executable file")
		}
		if err != nil {
			binaryErr = fmt.Errorf("TOOLGATE_HYDRA=%s: %v: run hack/hydra.sh and export TOOLGATE_HYDRA=$(hack/hydra.sh), or unset it", binaryPath, err)
		}
	})
	if binaryErr != nil {
		t.Fatal(binaryErr)
	}
	return binaryPath
}

// buildWithScript runs hack/hydra.sh of the repository the test runs in.
func buildWithScript() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		script := filepath.Join(dir, "hack", "hydra.sh")
		if _, err := os.Stat(script); err == nil {
			var stdout, stderr bytes.Buffer
			cmd := exec.Command(script)
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Run(); err != nil {
				return "", fmt.Errorf("build Hydra with %s: %v\n%s", script, err, stderr.String())
			}
			return strings.TrimSpace(stdout.String()), nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("TOOLGATE_HYDRA is not set and no hack/hydra.sh was found above the test's folder")
		}
		dir = parent
	}
}

// inheritedEnv is the part of the test's environment Hydra runs with: none
// of the variables Hydra reads as configuration (DSN, SERVE_*, URLS_*, ...).
func inheritedEnv() []string {
	var env []string
	for _, name := range []string{"PATH", "HOME", "TMPDIR", "TZ"} {
		if value, ok := os.LookupEnv(name); ok {
			env = append(env, name+"="+value)
		}
	}
	return env
}

// tail is the last n lines of the file at path.
func tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("... %d lines before", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}
