package main

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/toolgate/toolgate/controller/configstream"
	"github.com/toolgate/toolgate/controller/pki"
	"github.com/toolgate/toolgate/gateway"
	"github.com/toolgate/toolgate/internal/testproc"
)

// TestProxyServesWhatTheStreamSends runs the proxy binary against a config
// stream that is not there yet: the proxy is alive but not ready, and says
// why; once the stream serves its Gateway's snapshot, the proxy serves its
// listener and names the snapshot's version in /readyz.
func TestProxyServesWhatTheStreamSends(t *testing.T) {
	proxy, admin, version := startProxyAndStream(t)
	if _, body := get(t, admin+"/readyz"); !strings.Contains(body, version) {
		t.Errorf("/readyz %q does not name the version %s", body, version)
	}
	if _, body := get(t, admin+"/metrics"); !strings.Contains(body, `toolgate_config_version_info{gateway="team-a/edge",version="`+version+`"} 1`) {
		t.Errorf("/metrics has no toolgate_config_version_info for %s", version)
	}
	res, err := redirectClient.Get(proxy.listener + "/x")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusMovedPermanently || !strings.HasPrefix(res.Header.Get("Location"), "http://example.com") {
		t.Errorf("the listener answers %d Location %q, want the snapshot's redirect", res.StatusCode, res.Header.Get("Location"))
	}
}

// TestProxyDrainsOnSIGTERM: on SIGTERM the proxy fails /readyz and keeps
// serving new connections for --drain-delay, each response closing its
// connection; a second SIGTERM ends the delay, and the proxy stops.
func TestProxyDrainsOnSIGTERM(t *testing.T) {
	proxy, admin, _ := startProxyAndStream(t, "--drain-delay", "1h")
	if err := syscall.Kill(proxy.Pid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	proxy.WaitFor(t, "not ready", func() bool {
		status, _ := get(t, admin+"/readyz")
		return status == http.StatusServiceUnavailable
	})
	for range 3 {
		res, err := redirectClient.Get(proxy.listener + "/x")
		if err != nil {
			t.Fatalf("a request while draining: %v", err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusMovedPermanently || !res.Close {
			t.Errorf("a request while draining: %d, closes its connection: %v; want the redirect, closing", res.StatusCode, res.Close)
		}
	}
	if !strings.Contains(proxy.Log.String(), "draining before the listeners close") {
		t.Errorf("the proxy did not say it drains:\n%s", proxy.Log.String())
	}
	if err := syscall.Kill(proxy.Pid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	proxy.WaitFor(t, "stopped", func() bool { return strings.Contains(proxy.Log.String(), "shutdown: every request finished") })
	proxy.WaitFor(t, "no longer listening", func() bool { return !testproc.AcceptsConnections(strings.TrimPrefix(proxy.listener, "http://"))() })
}

// redirectClient does not follow redirects.
var redirectClient = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// streamedProxy is a proxy binary fed by a config stream.
type streamedProxy struct {
	*testproc.Process
	// listener is the base URL of its one listener.
	listener string
}

// startProxyAndStream runs the proxy binary, with args added, against a
// config stream that is not there yet, checks that the proxy is alive but
// not ready and says why, then serves the stream: one HTTP listener whose
// every request is redirected to example.com. It returns once the proxy is
// ready, with its admin URL and the snapshot's version.
func startProxyAndStream(t *testing.T, args ...string) (*streamedProxy, string, string) {
	t.Helper()
	gw := types.NamespacedName{Namespace: "team-a", Name: "edge"}
	now := time.Now()
	ca, err := pki.NewCA(now)
	if err != nil {
		t.Fatal(err)
	}
	dir := proxyTLSDir(t, ca, gw, now)
	ports := testproc.FreePorts(t, 3)
	streamPort, adminPort, listenerPort := ports[0], ports[1], ports[2]
	streamAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(streamPort))
	admin := "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(adminPort))

	proxy := testproc.Start(t, "toolgate proxy", testproc.Build(t, "github.com/toolgate/toolgate/cmd/toolgate"),
		append([]string{"proxy", "--gateway", gw.String(),
			"--controller", "https://" + streamAddr, "--controller-tls-dir", dir,
			"--admin-address", net.JoinHostPort("127.0.0.1", strconv.Itoa(adminPort)),
			"--listen-address", "127.0.0.1"}, args...)...)
	proxy.WaitFor(t, "alive", testproc.AnswersOK(admin+"/healthz"))
	proxy.WaitFor(t, "the stream's absence logged", func() bool { return strings.Contains(proxy.Log.String(), "config stream unavailable") })
	if status, body := get(t, admin+"/readyz"); status != http.StatusServiceUnavailable {
		t.Fatalf("/readyz before any snapshot: %d %s, want 503", status, body)
	}

	// The controller comes up with one listener for the Gateway.
	cfg := &gateway.Config{Listeners: []gateway.Listener{{
		Name: "team-a/edge/http", Port: listenerPort, Protocol: gateway.ProtocolHTTP,
		VirtualHosts: []gateway.VirtualHost{{Routes: []gateway.Route{{
			Namespace: "team-a", Name: "r",
			Rules: []gateway.Rule{{Filters: []gateway.Filter{{
				Type: gateway.FilterRequestRedirect, RequestRedirect: &gateway.Redirect{Hostname: "example.com", StatusCode: 301},
			}}}},
		}}}},
	}}}
	version := serveConfigStream(t, ca, gw, cfg, streamAddr, now)

	proxy.WaitFor(t, "ready", testproc.AnswersOK(admin+"/readyz"))
	return &streamedProxy{Process: proxy, listener: "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(listenerPort))}, admin, version
}

// proxyTLSDir writes what the kubelet would mount for Gateway gw's
// proxies: a client certificate ca issues, and ca's certificate.
func proxyTLSDir(t *testing.T, ca *pki.CA, gw types.NamespacedName, now time.Time) string {
	t.Helper()
	certPEM, keyPEM, err := ca.IssueClient(gw, now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for name, data := range map[string][]byte{"tls.crt": certPEM, "tls.key": keyPEM, "ca.crt": ca.CertPEM()} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// serveConfigStream serves cfg as Gateway gw's snapshot on a config
// stream at addr, as the controller does, until the test ends, and returns
// the snapshot's version.
func serveConfigStream(t *testing.T, ca *pki.CA, gw types.NamespacedName, cfg *gateway.Config, addr string, now time.Time) string {
	t.Helper()
	payload, err := gateway.EncodeConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	hub := configstream.NewHub()
	version := hub.Publish(gw, payload)
	hub.MarkSynced()
	serving, err := ca.IssueServer(nil, []net.IP{net.ParseIP("127.0.0.1")}, now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	server, err := configstream.NewServer(configstream.ServerOptions{
		Hub: hub, CA: ca, Certificate: func() (*tls.Certificate, error) { return &serving, nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- server.Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("config stream server: %v", err)
		}
	})
	return version
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
