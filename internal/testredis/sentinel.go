package testredis

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/toolgate/toolgate/internal/testport"
)

// Sentinel is a Redis Sentinel deployment owned by a test: a master, its
// replica, and three sentinels that promote the replica when two of them
// find the master down for half a second.
type Sentinel struct {
	// MasterName is the name the sentinels monitor the master under.
	MasterName string
	// Master is the master the deployment starts with; kill it with Stop to
	// make the sentinels fail over to Replica.
	Master *Server
	// Replica replicates Master, and is the master after a failover.
	Replica *Server
	// Sentinels watch Master.
	Sentinels []*Server

	reserved []*testport.Port // the master's, the replica's and the sentinels' ports
}

// Sentinel timings, short so that a failover completes in a few seconds.
const (
	// sentinelDownAfter is how long the master must not answer before a
	// sentinel finds it down.
	sentinelDownAfter = 500 * time.Millisecond
	// sentinelFailoverTimeout bounds each step of a failover; a sentinel
	// whose failover did not start (a split vote) tries again after twice
	// this.
	sentinelFailoverTimeout = 3 * time.Second
)

// StartSentinel starts a master, a replica and three sentinels on free
// loopback ports, and returns once every sentinel knows the replica (with a
// working link to the master) and the other sentinels, so that a test may
// kill the master at once. It fails, never skips, when redis-server or
// redis-sentinel is not installed: `make test` installs them.
func StartSentinel() (*Sentinel, error) {
	for _, program := range []string{"redis-server", "redis-sentinel"} {
		if err := lookPath(program, program); err != nil {
			return nil, err
		}
	}
	reserved, err := testport.Reserve("127.0.0.1", 5)
	if err != nil {
		return nil, err
	}
	ports := testport.Numbers(reserved)
	s := &Sentinel{MasterName: "toolgate-test", reserved: reserved}
	ok := false
	defer func() {
		if !ok {
			_ = s.Close()
		}
	}()
	s.Master, err = startServer("redis-server", ports[0], func(dir string) ([]string, error) {
		return serverArgs(ports[0], dir), nil
	})
	if err != nil {
		return nil, fmt.Errorf("start the sentinel deployment's master: %w", err)
	}
	s.Replica, err = startServer("redis-server", ports[1], func(dir string) ([]string, error) {
		return serverArgs(ports[1], dir, "--replicaof", "127.0.0.1", strconv.Itoa(ports[0])), nil
	})
	if err != nil {
		return nil, fmt.Errorf("start the sentinel deployment's replica: %w", err)
	}
	for _, port := range ports[2:] {
		sentinel, err := startServer("redis-sentinel", port, func(dir string) ([]string, error) {
			conf, err := writeSentinelConfig(dir, port, s.MasterName, ports[0])
			return []string{conf}, err
		})
		if err != nil {
			return nil, fmt.Errorf("start a sentinel: %w", err)
		}
		s.Sentinels = append(s.Sentinels, sentinel)
	}
	if err := poll(30*time.Second, s.ready); err != nil {
		return nil, fmt.Errorf("sentinels on %s did not get ready: %w; the first sentinel's log:\n%s", strings.Join(s.SentinelAddrs(), ", "), err, tail(s.Sentinels[0].Log(), 20))
	}
	ok = true
	return s, nil
}

// writeSentinelConfig writes the configuration file of a sentinel on port
// monitoring the master on masterPort as name, and returns its path. The
// sentinel rewrites the file as it learns about the deployment.
func writeSentinelConfig(dir string, port int, name string, masterPort int) (string, error) {
	conf := fmt.Sprintf(`port %[1]d
bind 127.0.0.1
dir %[2]q
logfile %[3]q
loglevel warning
save ""
appendonly no
sentinel resolve-hostnames no
sentinel monitor %[4]s 127.0.0.1 %[5]d 2
sentinel down-after-milliseconds %[4]s %[6]d
sentinel failover-timeout %[4]s %[7]d
sentinel parallel-syncs %[4]s 1
`, port, dir, logFile(dir), name, masterPort, sentinelDownAfter.Milliseconds(), sentinelFailoverTimeout.Milliseconds())
	path := filepath.Join(dir, "sentinel.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		return "", fmt.Errorf("write sentinel configuration: %w", err)
	}
	return path, nil
}

// ready checks that every sentinel sees the master up, the replica up and
// linked to it, and the other sentinels.
func (s *Sentinel) ready() error {
	for _, sentinel := range s.Sentinels {
		reply, err := command(sentinel.Addr(), "SENTINEL", "MASTER", s.MasterName)
		if err != nil {
			return err
		}
		master, err := fields(reply)
		if err != nil {
			return fmt.Errorf("SENTINEL MASTER on %s: %w", sentinel.Addr(), err)
		}
		if master["flags"] != "master" || master["num-slaves"] != "1" || master["num-other-sentinels"] != strconv.Itoa(len(s.Sentinels)-1) {
			return fmt.Errorf("sentinel %s sees the master with flags %q, %s replicas and %s other sentinels, want master, 1 and %d",
				sentinel.Addr(), master["flags"], master["num-slaves"], master["num-other-sentinels"], len(s.Sentinels)-1)
		}
		reply, err = command(sentinel.Addr(), "SENTINEL", "REPLICAS", s.MasterName)
		if err != nil {
			return err
		}
		replicas, _ := reply.([]any)
		found := false
		var seen []string
		for _, r := range replicas {
			replica, err := fields(r)
			if err != nil {
				return fmt.Errorf("SENTINEL REPLICAS on %s: %w", sentinel.Addr(), err)
			}
			addr := net.JoinHostPort(replica["ip"], replica["port"])
			if addr == s.Replica.Addr() && replica["flags"] == "slave" && replica["master-link-status"] == "ok" {
				found = true
				break
			}
			seen = append(seen, fmt.Sprintf("%s with flags %q and link %q", addr, replica["flags"], replica["master-link-status"]))
		}
		if !found {
			return fmt.Errorf("sentinel %s does not see replica %s up and linked to the master (it sees %v)", sentinel.Addr(), s.Replica.Addr(), seen)
		}
	}
	return nil
}

// SentinelAddrs are the sentinels' host:port addresses.
func (s *Sentinel) SentinelAddrs() []string {
	addrs := make([]string, len(s.Sentinels))
	for i, sentinel := range s.Sentinels {
		addrs[i] = sentinel.Addr()
	}
	return addrs
}

// MasterAddr asks the sentinels for the master's host:port: Master's address
// until a failover, Replica's after.
func (s *Sentinel) MasterAddr() (string, error) {
	var errs []error
	for _, sentinel := range s.Sentinels {
		reply, err := command(sentinel.Addr(), "SENTINEL", "GET-MASTER-ADDR-BY-NAME", s.MasterName)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if hostPort, ok := reply.([]any); ok && len(hostPort) == 2 {
			host, _ := hostPort[0].(string)
			port, _ := hostPort[1].(string)
			return net.JoinHostPort(host, port), nil
		}
		errs = append(errs, fmt.Errorf("GET-MASTER-ADDR-BY-NAME on %s: unexpected reply %v", sentinel.Addr(), reply))
	}
	return "", fmt.Errorf("ask the sentinels for master %s: %w", s.MasterName, errors.Join(errs...))
}

// Close stops every process of the deployment and removes their files.
func (s *Sentinel) Close() error {
	var servers []*Server
	for _, srv := range append([]*Server{s.Master, s.Replica}, s.Sentinels...) {
		if srv != nil {
			servers = append(servers, srv)
		}
	}
	err := closeAll(servers)
	release(s.reserved)
	s.reserved = nil
	return err
}
