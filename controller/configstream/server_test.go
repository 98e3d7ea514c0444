package configstream

import (
	"crypto/tls"
	"maps"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestNewServerNeedsItsParts(t *testing.T) {
	ca := newCA(t)
	cert := func() (*tls.Certificate, error) { return nil, nil }
	tests := []struct {
		name string
		opts ServerOptions
	}{
		{"no Hub", ServerOptions{CA: ca, Certificate: cert}},
		{"no CA", ServerOptions{Hub: NewHub(), Certificate: cert}},
		{"no certificate", ServerOptions{Hub: NewHub(), CA: ca}},
		{"a negative poll timeout", ServerOptions{Hub: NewHub(), CA: ca, Certificate: cert, PollTimeout: -time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := NewServer(tt.opts); err == nil {
				t.Error("NewServer succeeded")
			}
		})
	}
}

func TestTLSConfigRequiresVerifiedClientCertificates(t *testing.T) {
	ca := newCA(t)
	s, err := NewServer(ServerOptions{Hub: NewHub(), CA: ca, Certificate: func() (*tls.Certificate, error) { return nil, nil }})
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.TLSConfig()
	if cfg.MinVersion != tls.VersionTLS13 || cfg.ClientAuth != tls.RequireAndVerifyClientCert || cfg.ClientCAs == nil {
		t.Errorf("TLSConfig = min %x, client auth %v, client CAs %v", cfg.MinVersion, cfg.ClientAuth, cfg.ClientCAs)
	}
	if got := strings.Join(cfg.NextProtos, ","); got != "h2,http/1.1" {
		t.Errorf("NextProtos = %s, want h2,http/1.1", got)
	}
}

func TestAStaleOrEmptyVersionIsAnsweredAtOnce(t *testing.T) {
	ca := newCA(t)
	ts := startServer(t, serverConfig{ca: ca, pollTimeout: time.Hour})
	v := ts.hub.Publish(gwA, []byte(`{"gateway":"a"}`))
	cert := clientCert(t, ca, gwA)
	c := rawClient(t, ca, &cert)

	for _, have := range []string{"", "0123456789abcdef"} {
		resp, err := get(t, c, configURL(ts, gwA, have))
		if err != nil {
			t.Fatal(err)
		}
		if resp.status != http.StatusOK || resp.version != v || resp.body != `{"gateway":"a"}` {
			t.Errorf("version=%q: %d %s %q, want 200 %s with the payload", have, resp.status, resp.version, resp.body, v)
		}
		if ct := resp.header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("Content-Type = %q", ct)
		}
	}
}

func TestAWaitingRequestIsAnsweredWithTheNextVersion(t *testing.T) {
	ca := newCA(t)
	ts := startServer(t, serverConfig{ca: ca, pollTimeout: time.Hour})
	v1 := ts.hub.Publish(gwA, []byte(`{"n":1}`))
	cert := clientCert(t, ca, gwA)
	c := rawClient(t, ca, &cert)

	type result struct {
		resp response
		err  error
	}
	answered := make(chan result, 1)
	go func() {
		resp, err := get(t, c, configURL(ts, gwA, v1))
		answered <- result{resp, err}
	}()
	eventually(t, "the request to wait", func() bool { return ts.waiting.Load() == 1 })

	// The same payload again: the snapshot the request waits on stays.
	waitedOn, _ := ts.hub.current(gwA)
	ts.hub.Publish(gwA, []byte(`{"n":1}`))
	if closed(waitedOn.changed) {
		t.Fatal("publishing the same payload woke the waiting request")
	}

	v2 := ts.hub.Publish(gwA, []byte(`{"n":2}`))
	r := <-answered
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.resp.status != http.StatusOK || r.resp.version != v2 || r.resp.body != `{"n":2}` {
		t.Errorf("answer = %d %s %q, want 200 %s {\"n\":2}", r.resp.status, r.resp.version, r.resp.body, v2)
	}
	eventually(t, "the waiter count to drop", func() bool { return ts.waiting.Load() == 0 })
}

func TestACurrentVersionIsNotModifiedAfterThePollTimeout(t *testing.T) {
	ca := newCA(t)
	ts := startServer(t, serverConfig{ca: ca, pollTimeout: 10 * time.Millisecond})
	v := ts.hub.Publish(gwA, []byte(`{}`))
	cert := clientCert(t, ca, gwA)

	resp, err := get(t, rawClient(t, ca, &cert), configURL(ts, gwA, v))
	if err != nil {
		t.Fatal(err)
	}
	if resp.status != http.StatusNotModified || resp.version != v || resp.body != "" {
		t.Errorf("answer = %d %s %q, want 304 %s and no body", resp.status, resp.version, resp.body, v)
	}
}

func TestUnknownGateways(t *testing.T) {
	ca := newCA(t)
	ts := startServer(t, serverConfig{ca: ca, pollTimeout: time.Hour})
	ts.hub.Publish(gwB, []byte(`{}`))
	cert := clientCert(t, ca, gwA)
	c := rawClient(t, ca, &cert)

	check := func(when string, want int) {
		t.Helper()
		resp, err := get(t, c, configURL(ts, gwA, ""))
		if err != nil {
			t.Fatal(err)
		}
		if resp.status != want || resp.header.Get("Retry-After") == "" {
			t.Errorf("%s: %d with Retry-After %q, want %d with one", when, resp.status, resp.header.Get("Retry-After"), want)
		}
	}
	check("before the first translation", http.StatusServiceUnavailable)
	ts.hub.MarkSynced()
	check("after it", http.StatusNotFound)
}

func TestADeletedGatewayAnswersItsWaitersNotFound(t *testing.T) {
	ca := newCA(t)
	ts := startServer(t, serverConfig{ca: ca, pollTimeout: time.Hour})
	v := ts.hub.Publish(gwA, []byte(`{}`))
	ts.hub.MarkSynced()
	cert := clientCert(t, ca, gwA)
	c := rawClient(t, ca, &cert)

	answered := make(chan response, 1)
	go func() {
		resp, err := get(t, c, configURL(ts, gwA, v))
		if err != nil {
			t.Error(err)
		}
		answered <- resp
	}()
	eventually(t, "the request to wait", func() bool { return ts.waiting.Load() == 1 })
	ts.hub.Retain(nil)
	if resp := <-answered; resp.status != http.StatusNotFound {
		t.Errorf("answer = %d, want 404", resp.status)
	}
}

func TestOnlyAGatewaysOwnProxiesReadItsConfiguration(t *testing.T) {
	ca := newCA(t)
	otherCA := newCA(t)
	ts := startServer(t, serverConfig{ca: ca, pollTimeout: time.Hour})
	ts.hub.Publish(gwA, []byte(`{"secret":"a"}`))
	ts.hub.Publish(gwB, []byte(`{"secret":"b"}`))

	certA := clientCert(t, ca, gwA)
	certB := clientCert(t, ca, gwB)
	foreign := clientCert(t, otherCA, gwA)
	serving, err := ca.IssueServer([]string{"impostor"}, nil, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name          string
		cert          *tls.Certificate
		wantStatus    int // 0: the handshake fails
		wantBodyParts []string
	}{
		{"Gateway A's proxy", &certA, http.StatusOK, []string{`"a"`}},
		{"Gateway B's proxy", &certB, http.StatusForbidden, []string{gwA.String(), gwB.String()}},
		{"a certificate from another CA", &foreign, 0, nil},
		{"no certificate", nil, 0, nil},
		{"a serving certificate of the CA", &serving, 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := get(t, rawClient(t, ca, tt.cert), configURL(ts, gwA, ""))
			if tt.wantStatus == 0 {
				if err == nil {
					t.Fatalf("answered %d %q, want a failed handshake", resp.status, resp.body)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if resp.status != tt.wantStatus {
				t.Errorf("status = %d, want %d", resp.status, tt.wantStatus)
			}
			for _, part := range tt.wantBodyParts {
				if !strings.Contains(resp.body, part) {
					t.Errorf("body %q does not contain %q", resp.body, part)
				}
			}
			if tt.wantStatus == http.StatusForbidden && strings.Count(strings.TrimSpace(resp.body), "\n") != 0 {
				t.Errorf("the reason %q is not one line", resp.body)
			}
		})
	}
}

func TestOnlyGETOfTheConfigPathIsServed(t *testing.T) {
	ca := newCA(t)
	ts := startServer(t, serverConfig{ca: ca, pollTimeout: time.Hour})
	ts.hub.Publish(gwA, []byte(`{}`))
	cert := clientCert(t, ca, gwA)
	c := rawClient(t, ca, &cert)

	resp, err := c.Post(configURL(ts, gwA, ""), "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d, want 405", resp.StatusCode)
	}
	r, err := get(t, c, ts.url+"/v1/gateways/"+gwA.Namespace+"/"+gwA.Name)
	if err != nil {
		t.Fatal(err)
	}
	if r.status != http.StatusNotFound {
		t.Errorf("GET of another path: %d, want 404", r.status)
	}
}

// Serve answers waiting requests when it stops, rather than keeping its
// shutdown waiting for their poll timeout.
func TestStoppingAnswersWaitingRequests(t *testing.T) {
	ca := newCA(t)
	ts := startServer(t, serverConfig{ca: ca, pollTimeout: time.Hour})
	v := ts.hub.Publish(gwA, []byte(`{}`))
	cert := clientCert(t, ca, gwA)
	c := rawClient(t, ca, &cert)

	answered := make(chan response, 1)
	go func() {
		resp, err := get(t, c, configURL(ts, gwA, v))
		if err != nil {
			t.Error(err)
		}
		answered <- resp
	}()
	eventually(t, "the request to wait", func() bool { return ts.waiting.Load() == 1 })
	ts.stop()
	if resp := <-answered; resp.status != http.StatusNotModified || resp.version != v {
		t.Errorf("answer = %d %s, want 304 %s", resp.status, resp.version, v)
	}
}

func TestTheServerExportsTheExpiryOfTheCAAndItsCertificate(t *testing.T) {
	ca := newCA(t)
	serving, err := ca.IssueServer([]string{"localhost"}, nil, time.Now(), 2*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewPedanticRegistry()
	_, err = NewServer(ServerOptions{
		Hub: NewHub(), CA: ca, Registerer: reg,
		Certificate: func() (*tls.Certificate, error) { return &serving, nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range families {
		if mf.GetName() != MetricCertificateExpiry {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "certificate" {
					got[l.GetValue()] = m.GetGauge().GetValue()
				}
			}
		}
	}
	want := map[string]float64{
		"ca":      float64(ca.Certificate().NotAfter.Unix()),
		"serving": float64(serving.Leaf.NotAfter.Unix()),
	}
	if !maps.Equal(got, want) {
		t.Errorf("%s = %v, want %v", MetricCertificateExpiry, got, want)
	}
}
