package gateway

import (
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/toolgate/toolgate/internal/testproc"
)

// rollbackHost is the server name of the HTTPS listeners in these tests.
const rollbackHost = "gw.example.com"

// freePort returns a loopback port nobody listens on, for listeners that
// must keep their port across Applies (port 0 would pick a new one).
var freePort = testproc.FreePort

// portListener is a listener on 127.0.0.1:port with one route to be.
func portListener(name string, port int, protocol Protocol, certs []Certificate, be Backend) Listener {
	l := httpListener(name, VirtualHost{Routes: []Route{{Namespace: "ns", Name: name, Rules: []Rule{{Backends: []Backend{be}}}}}})
	l.Port = port
	l.Protocol = protocol
	if protocol == ProtocolHTTPS {
		l.Hostname = rollbackHost
		l.Certificates = certs
	}
	return l
}

// answers reports whether addr serves a request over protocol, with a
// status or the error that says why not.
func answers(t *testing.T, protocol Protocol, addr string, certs []Certificate) (bool, string) {
	t.Helper()
	scheme, transport := "http", &http.Transport{}
	if protocol == ProtocolHTTPS {
		scheme = "https"
		transport.TLSClientConfig = &tls.Config{ServerName: rollbackHost, RootCAs: certPool(t, certs[0])}
	}
	defer transport.CloseIdleConnections()
	c := &http.Client{Timeout: waitLong, Transport: transport}
	req, err := http.NewRequest(http.MethodGet, scheme+"://"+addr+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = rollbackHost
	resp, err := c.Do(req)
	if err != nil {
		return false, err.Error()
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK, resp.Status
}

func TestFailedApplyKeepsEveryPortOfThePreviousConfiguration(t *testing.T) {
	certs := testCertificates(t, rollbackHost)
	be := backendOf("b", 1, echoBackend(t, "b"))
	tests := []struct {
		name string
		// takeNewPort binds the new listener's port before the Apply.
		takeNewPort bool
		// failRebind, given the address of a port whose protocol changes,
		// makes its first bind fail; takeIt also binds it for someone else,
		// so that restoring it fails too.
		failRebind, takeIt bool
		// wantLost: the Apply reports that port a could not be restored.
		wantLost bool
	}{
		{name: "a new port taken by another process leaves the old sockets untouched", takeNewPort: true},
		{name: "a failed rebind for a protocol change restores the old protocol", failRebind: true},
		{name: "a port taken while it was rebound is reported and reopened by the next apply", failRebind: true, takeIt: true, wantLost: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			held := newHeldStream()
			stream := backendOf("stream", 1, newHTTPTestServer(t, held))
			s := newServer(t, Options{})
			portA, portB, portC := freePort(t), freePort(t), freePort(t)
			addrA := net.JoinHostPort("127.0.0.1", strconv.Itoa(portA))
			addrB := net.JoinHostPort("127.0.0.1", strconv.Itoa(portB))
			// a streams, so that an in-flight response crosses the Apply.
			old := &Config{Listeners: []Listener{
				portListener("a", portA, ProtocolHTTP, nil, stream),
				portListener("b", portB, ProtocolHTTPS, certs, be),
			}}
			mustApply(t, s, old)
			_, events := openStream(t, http.MethodGet, "http://"+addrA+"/")
			if got, err := events.next(); err != nil || got != "first" {
				t.Fatalf("first event = %q, %v", got, err)
			}

			// Both old ports change protocol, and a port is added.
			changed := &Config{Listeners: []Listener{
				portListener("a", portA, ProtocolHTTPS, certs, stream),
				portListener("b", portB, ProtocolHTTP, nil, be),
				portListener("c", portC, ProtocolHTTP, nil, be),
			}}
			if tt.takeNewPort {
				taken, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(portC)))
				if err != nil {
					t.Fatal(err)
				}
				defer taken.Close()
			}
			var thief net.Listener
			if tt.failRebind {
				failed := false
				s.bindTCP = func(addr string) (net.Listener, error) {
					if addr != addrA || failed {
						return net.Listen("tcp", addr)
					}
					failed = true
					if tt.takeIt {
						var err error
						if thief, err = net.Listen("tcp", addr); err != nil {
							t.Errorf("take %s: %v", addr, err)
						}
					}
					return nil, errors.New("simulated bind failure")
				}
			}

			err := s.Apply(changed)
			if err == nil {
				t.Fatal("Apply succeeded, want a listen error")
			}
			s.bindTCP = nil
			if lost := strings.Contains(err.Error(), "could not be bound again"); lost != tt.wantLost {
				t.Errorf("Apply error %q: reports a lost port = %v, want %v", err, lost, tt.wantLost)
			}

			if !tt.wantLost {
				if ok, why := answers(t, ProtocolHTTP, addrA, nil); !ok {
					t.Errorf("after the failed Apply, HTTP on %s: %s", addrA, why)
				}
			}
			if ok, why := answers(t, ProtocolHTTPS, addrB, certs); !ok {
				t.Errorf("after the failed Apply, HTTPS on %s: %s", addrB, why)
			}
			if a := s.Addr("c"); a != nil {
				t.Errorf("the failed Apply left listener c bound on %s", a)
			}
			close(held.release)
			if got, err := events.next(); err != nil || got != "last" {
				t.Errorf("the stream open across the failed Apply: last event = %q, %v", got, err)
			}

			if tt.wantLost {
				thief.Close()
				mustApply(t, s, old)
				if ok, why := answers(t, ProtocolHTTP, addrA, nil); !ok {
					t.Errorf("after the lost port was freed and the config applied again, HTTP on %s: %s", addrA, why)
				}
			}
		})
	}
}

func TestProtocolChangeKeepsThePort(t *testing.T) {
	certs := testCertificates(t, rollbackHost)
	be := backendOf("b", 1, echoBackend(t, "b"))
	s := newServer(t, Options{})
	port := freePort(t)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))

	for _, protocol := range []Protocol{ProtocolHTTP, ProtocolHTTPS, ProtocolHTTP} {
		mustApply(t, s, &Config{Listeners: []Listener{portListener("web", port, protocol, certs, be)}})
		if got := s.Addr("web").String(); got != addr {
			t.Fatalf("%s listener bound on %s, want %s", protocol, got, addr)
		}
		if ok, why := answers(t, protocol, addr, certs); !ok {
			t.Errorf("after changing to %s, %s on %s: %s", protocol, protocol, addr, why)
		}
	}
}
