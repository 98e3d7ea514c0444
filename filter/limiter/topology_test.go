package limiter_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/toolgate/toolgate/filter/limiter"
	"github.com/toolgate/toolgate/internal/testredis"
)

// topologyTimeout bounds a round trip in the Cluster and Sentinel tests.
// These tests check that limits are exact and that decisions resume after a
// failover, not latency: a store that gives up after the default 50ms on a
// loaded machine under the race detector would turn a slow answer into an
// error and hide what they check.
const topologyTimeout = 5 * time.Second

// topologyClient returns a client built as every toolgate mode builds it,
// closed with the test.
func topologyClient(t *testing.T, cfg limiter.RedisConfig) redis.UniversalClient {
	t.Helper()
	client, err := limiter.NewRedisClient(cfg)
	if err != nil {
		t.Fatalf("NewRedisClient(%+v): %v", cfg, err)
	}
	t.Cleanup(func() { _ = client.Close() })
	return client
}

// topologyStore returns a store on client with its own key prefix, closed
// with the test.
func topologyStore(t *testing.T, client redis.UniversalClient) (*limiter.Redis, string) {
	t.Helper()
	prefix := newPrefix()
	s := limiter.NewRedis(client, limiter.RedisOptions{Prefix: prefix, Timeout: topologyTimeout})
	t.Cleanup(func() { _ = s.Close() })
	return s, prefix
}

func TestRedisCluster(t *testing.T) {
	cluster, err := testredis.StartCluster()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := cluster.Close(); err != nil {
			t.Errorf("close the cluster: %v", err)
		}
	})
	client := topologyClient(t, limiter.RedisConfig{Addrs: cluster.Addrs(), Timeout: topologyTimeout})
	nodes, ok := client.(*redis.ClusterClient)
	if !ok {
		t.Fatalf("NewRedisClient with the %d addresses of cluster nodes made a %T, want a *redis.ClusterClient", len(cluster.Addrs()), client)
	}

	t.Run("the store suite passes", func(t *testing.T) {
		runStoreSuite(t, func(t *testing.T) (limiter.Store, clock) {
			c := newFakeClock()
			s := limiter.NewRedisWithClock(client, limiter.RedisOptions{Prefix: newPrefix(), Timeout: topologyTimeout}, c.Now)
			t.Cleanup(func() { _ = s.Close() })
			return s, c
		})
	})

	t.Run("400 concurrent takes from a bucket of 2 tokens allow exactly 2", func(t *testing.T) {
		s, _ := topologyStore(t, client)
		l := limiter.Limit{MaxTokens: 2, RefillPeriod: time.Hour}
		const takes = 400
		var (
			allowed atomic.Int64
			mu      sync.Mutex
			errs    []error
			wg      sync.WaitGroup
			start   = make(chan struct{})
		)
		for range takes {
			wg.Go(func() {
				<-start
				dec, err := s.Take(context.Background(), []limiter.Demand{demand(alice, l, 1)})
				switch {
				case err != nil:
					// An error is not an admission; it is counted below.
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				case dec.Allowed:
					allowed.Add(1)
				}
			})
		}
		close(start)
		wg.Wait()
		// With a generous round-trip timeout every decision is made, so an
		// error is a fault of the store on Cluster, not a slow machine.
		if len(errs) > 0 {
			t.Errorf("%d of %d takes failed, want none; the first: %v", len(errs), takes, errs[0])
		}
		if got := allowed.Load(); got != l.MaxTokens {
			t.Errorf("%d of %d takes were allowed, want exactly %d", got, takes, l.MaxTokens)
		}
	})

	t.Run("servers' buckets spread over the nodes and a decision's keys share one slot", func(t *testing.T) {
		ctx := context.Background()
		s, prefix := topologyStore(t, client)
		l := limiter.Limit{MaxTokens: 10, RefillPeriod: time.Hour}
		const servers = 12
		for i := range servers {
			srv := fmt.Sprintf("team-a/server-%d", i)
			// The four buckets of a tools/call with every limit set.
			wantAllowed(t, take(t, s,
				demand(limiter.BucketID{Server: srv}, l, 1),
				demand(limiter.BucketID{Server: srv, Tool: "search"}, l, 1),
				demand(limiter.BucketID{Server: srv, User: "alice"}, l, 1),
				demand(limiter.BucketID{Server: srv, Tool: "search", User: "alice"}, l, 1),
			), true)
		}

		type key struct{ name, node string }
		var (
			mu   sync.Mutex
			keys []key
		)
		err := nodes.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
			names, err := node.Keys(ctx, prefix+":*").Result()
			if err != nil {
				return fmt.Errorf("KEYS on %s: %w", node.Options().Addr, err)
			}
			mu.Lock()
			defer mu.Unlock()
			for _, name := range names {
				keys = append(keys, key{name, node.Options().Addr})
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(keys) != 4*servers {
			t.Fatalf("decisions over the 4 buckets of %d servers left %d keys on the nodes, want %d: %v", servers, len(keys), 4*servers, keys)
		}

		type place struct {
			nodes map[string]bool
			slots map[int64]bool
		}
		byServer := make(map[string]*place) // by hash tag
		usedNodes := make(map[string]int)
		for _, k := range keys {
			slot, err := nodes.ClusterKeySlot(ctx, k.name).Result()
			if err != nil {
				t.Fatalf("CLUSTER KEYSLOT %s: %v", k.name, err)
			}
			tag := hashTag(k.name)
			if byServer[tag] == nil {
				byServer[tag] = &place{nodes: map[string]bool{}, slots: map[int64]bool{}}
			}
			byServer[tag].nodes[k.node] = true
			byServer[tag].slots[slot] = true
			usedNodes[k.node]++
		}
		if len(byServer) != servers {
			t.Errorf("the keys of %d servers carry %d hash tags, want one per server", servers, len(byServer))
		}
		for tag, p := range byServer {
			if len(p.nodes) != 1 || len(p.slots) != 1 {
				t.Errorf("the keys with hash tag %q are on nodes %v in slots %v, want one node and one slot", tag, slices.Sorted(maps.Keys(p.nodes)), slices.Sorted(maps.Keys(p.slots)))
			}
		}
		t.Logf("keys per node: %v", usedNodes)
		if len(usedNodes) < 2 {
			t.Errorf("the buckets of %d servers are all on one node (%v), want them spread over at least two of %d", servers, usedNodes, len(cluster.Nodes))
		}
	})
}

// failoverBound is how long the sentinels may take to promote the replica
// and the store to find it. A failover takes a few seconds (the master is
// down after 500ms, then the sentinels vote); this bounds a hang, it does
// not measure speed.
const failoverBound = 30 * time.Second

func TestRedisSentinelFailover(t *testing.T) {
	deployment, err := testredis.StartSentinel()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := deployment.Close(); err != nil {
			t.Errorf("close the sentinel deployment: %v", err)
		}
	})
	client := topologyClient(t, limiter.RedisConfig{Addrs: deployment.SentinelAddrs(), MasterName: deployment.MasterName, Timeout: topologyTimeout})
	if _, ok := client.(*redis.Client); !ok {
		t.Fatalf("NewRedisClient with sentinel addresses and a master name made a %T, want a failover *redis.Client", client)
	}
	s, _ := topologyStore(t, client)

	drained := limiter.Limit{MaxTokens: 3, RefillPeriod: time.Hour}
	for range 3 {
		wantAllowed(t, take(t, s, demand(alice, drained, 1)), true)
	}
	wantAllowed(t, take(t, s, demand(alice, drained, 1)), false)

	if err := deployment.Master.Stop(); err != nil {
		t.Fatalf("kill the master: %v", err)
	}
	killed := time.Now()
	// Decisions fail until the sentinels have promoted the replica and the
	// store has found it. Whether alice's bucket is still drained depends on
	// what reached the replica before the kill: it is not checked.
	var errs []error
	for {
		_, err := s.Take(context.Background(), []limiter.Demand{demand(alice, drained, 1)})
		if err == nil {
			break
		}
		if len(errs) == 0 || errs[len(errs)-1].Error() != err.Error() {
			errs = append(errs, err)
		}
		if time.Since(killed) > failoverBound {
			master, addrErr := deployment.MasterAddr()
			t.Fatalf("no decision succeeded within %s of killing the master %s (the sentinels name %q as master, error %v); the errors, in order: %v; the first sentinel's log:\n%s",
				failoverBound, deployment.Master.Addr(), master, addrErr, errors.Join(errs...), deployment.Sentinels[0].Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("decisions resumed %s after the master was killed, after %d distinct errors: %v", time.Since(killed).Round(time.Millisecond), len(errs), errs)
	// The sentinel the store heard the switch from may be ahead of the one
	// asked here: wait until it names the replica too.
	for {
		master, err := deployment.MasterAddr()
		if err == nil && master == deployment.Replica.Addr() {
			break
		}
		if time.Since(killed) > failoverBound {
			t.Fatalf("%s after the kill the sentinels name %s (error %v) as master, want the replica %s", failoverBound, master, err, deployment.Replica.Addr())
		}
		time.Sleep(50 * time.Millisecond)
	}

	fresh := limiter.Limit{MaxTokens: 2, RefillPeriod: time.Hour}
	var allowed []bool
	for range 5 {
		allowed = append(allowed, take(t, s, demand(bob, fresh, 1)).Allowed)
	}
	if want := []bool{true, true, false, false, false}; fmt.Sprint(allowed) != fmt.Sprint(want) {
		t.Errorf("after the failover 5 takes from a fresh bucket of 2 tokens were allowed %v, want %v", allowed, want)
	}
}
