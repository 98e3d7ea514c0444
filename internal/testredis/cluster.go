package testredis

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/toolgate/toolgate/internal/testport"
)

// Cluster is a Redis Cluster of three masters, no replicas, owned by a test.
type Cluster struct {
	// Nodes are the masters; each serves a third of the hash slots.
	Nodes []*Server

	reserved []*testport.Port // the nodes' client and bus ports
}

// clusterNodeTimeout is how long a node may not answer before the others
// find it failing. No test fails a node over: it only needs to be long
// enough not to mistake a slow node under the race detector for a dead one.
const clusterNodeTimeout = 5 * time.Second

// StartCluster starts three cluster-enabled redis-servers on free loopback
// ports, joins them with `redis-cli --cluster create`, and returns once every
// node reports cluster_state:ok with every slot served. It fails, never
// skips, when redis-server or redis-cli is not installed: `make test`
// installs them.
func StartCluster() (*Cluster, error) {
	if err := lookPath("redis-server", "redis-server"); err != nil {
		return nil, err
	}
	if err := lookPath("redis-cli", "redis-tools"); err != nil {
		return nil, err
	}
	const nodes = 3
	// A node's client port and its cluster bus port (by default the client
	// port plus 10000, which may be taken or past 65535).
	reserved, err := testport.Reserve("127.0.0.1", 2*nodes)
	if err != nil {
		return nil, err
	}
	ports := testport.Numbers(reserved)
	c := &Cluster{reserved: reserved}
	ok := false
	defer func() {
		if !ok {
			_ = c.Close()
		}
	}()
	for i := range nodes {
		port, busPort := ports[2*i], ports[2*i+1]
		node, err := startServer("redis-server", port, func(dir string) ([]string, error) {
			return serverArgs(port, dir,
				"--cluster-enabled", "yes",
				"--cluster-port", strconv.Itoa(busPort),
				"--cluster-config-file", filepath.Join(dir, "nodes.conf"),
				"--cluster-node-timeout", strconv.FormatInt(clusterNodeTimeout.Milliseconds(), 10),
			), nil
		})
		if err != nil {
			return nil, fmt.Errorf("start cluster node %d: %w", i, err)
		}
		c.Nodes = append(c.Nodes, node)
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	args := append([]string{"--cluster", "create"}, c.Addrs()...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	create := exec.CommandContext(ctx, "redis-cli", args...)
	dieWithParent(create)
	if out, err := create.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("redis-cli %s: %w; it said:\n%s", strings.Join(args, " "), err, tail(string(out), 20))
	}
	if err := poll(30*time.Second, c.ready); err != nil {
		return nil, fmt.Errorf("cluster %s did not get ready: %w", strings.Join(c.Addrs(), ", "), err)
	}
	ok = true
	return c, nil
}

// ready checks that every node knows every other and sees all slots served.
func (c *Cluster) ready() error {
	want := []string{"cluster_state:ok", "cluster_slots_ok:16384", "cluster_known_nodes:" + strconv.Itoa(len(c.Nodes))}
	for _, node := range c.Nodes {
		reply, err := command(node.Addr(), "CLUSTER", "INFO")
		if err != nil {
			return err
		}
		info, _ := reply.(string)
		lines := make(map[string]bool)
		for line := range strings.Lines(info) {
			lines[strings.TrimSpace(line)] = true
		}
		for _, w := range want {
			if !lines[w] {
				return fmt.Errorf("CLUSTER INFO on %s has no %q:\n%s", node.Addr(), w, info)
			}
		}
	}
	return nil
}

// Addrs are the nodes' host:port addresses.
func (c *Cluster) Addrs() []string {
	addrs := make([]string, len(c.Nodes))
	for i, node := range c.Nodes {
		addrs[i] = node.Addr()
	}
	return addrs
}

// Close stops every node and removes their files.
func (c *Cluster) Close() error {
	err := closeAll(c.Nodes)
	release(c.reserved)
	c.reserved = nil
	return err
}
