package redistest

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"
)

func TestKeySlot(t *testing.T) {
	// Values from the Redis Cluster specification and CLUSTER KEYSLOT.
	for key, want := range map[string]uint16{
		"123456789":     0x31c3 % 16384,
		"foo":           12182,
		"{user1000}.a":  keySlot("user1000"),
		"foo{}{bar}":    keySlot("foo{}{bar}"),
		"foo{{bar}}zap": keySlot("{bar"),
	} {
		if got := keySlot(key); got != want {
			t.Errorf("keySlot(%q) = %d, want %d", key, got, want)
		}
	}
}

func TestClusterFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("a Redis Cluster failover: skipped with -short")
	}
	began := time.Now()
	c := StartCluster(t, 3, 1)
	t.Logf("cluster of %d nodes up in %s", len(c.Nodes), time.Since(began).Round(time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	if got := len(c.Addrs()); got != 6 {
		t.Fatalf("%d addresses, want 6", got)
	}
	masters := c.Masters(t)
	if len(masters) != 3 {
		t.Fatalf("%d masters, want 3", len(masters))
	}
	for _, m := range masters {
		if !slices.Contains(c.Nodes[:3], m) {
			t.Errorf("master %s is not one of the first 3 nodes", m.Addr)
		}
	}

	rdb := c.Client(t)
	keys := make([]string, 30)
	served := map[*Server]int{}
	for i := range keys {
		keys[i] = fmt.Sprintf("order:%d", i)
		if err := rdb.Set(ctx, keys[i], "v"+keys[i], 0).Err(); err != nil {
			t.Fatalf("SET %s: %v", keys[i], err)
		}
		m := c.MasterOf(t, keys[i])
		served[m]++
		// Our slot is the server's.
		slot, err := m.Client(t).ClusterKeySlot(ctx, keys[i]).Result()
		if err != nil || slot != int64(keySlot(keys[i])) {
			t.Fatalf("CLUSTER KEYSLOT %s = %d, %v; keySlot says %d", keys[i], slot, err, keySlot(keys[i]))
		}
		if v, err := m.Client(t).Get(ctx, keys[i]).Result(); err != nil || v != "v"+keys[i] {
			t.Fatalf("GET %s from its master %s = %q, %v", keys[i], m.Addr, v, err)
		}
	}
	if len(served) != 3 {
		t.Fatalf("the keys are on %d masters, want 3", len(served))
	}

	key := keys[0]
	old := c.MasterOf(t, key)
	// WAIT counts replicas that have this connection's writes: write to the
	// key's slot on one connection, after the keys, then WAIT on it.
	conn := old.Client(t).Conn()
	if err := conn.Set(ctx, "{"+key+"}:sync", "1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	// Each WAIT within the client's read timeout (800 ms); a replica busy
	// on a loaded machine gets ten of them.
	for try := 1; ; try++ {
		n, err := conn.Do(ctx, "WAIT", 1, 500).Int()
		if err == nil && n == 1 {
			break
		}
		if try == 10 {
			t.Fatalf("WAIT 1 500 = %d, %v, %d times; want 1 replica", n, err, try)
		}
	}
	_ = conn.Close()

	old.Kill()
	killed := time.Now()
	c.WaitFailover(t)
	t.Logf("failover of %s took %s", old.Addr, time.Since(killed).Round(time.Millisecond))

	now := c.MasterOf(t, key)
	if now == old {
		t.Fatalf("%s is still master of %s after it was killed", old.Addr, key)
	}
	if slices.Contains(c.Nodes[:3], now) {
		t.Errorf("new master %s of %s was a master before, not a replica", now.Addr, key)
	}
	if v, err := now.Client(t).Get(ctx, key).Result(); err != nil || v != "v"+key {
		t.Fatalf("GET %s from the new master %s = %q, %v", key, now.Addr, v, err)
	}
	masters = c.Masters(t)
	if len(masters) != 3 || slices.Contains(masters, old) || !slices.Contains(masters, now) {
		t.Fatalf("masters after failover are %v", addrsOf(masters))
	}

	// The cluster client finds the new master: every key reads back.
	for _, k := range keys {
		if v, err := rdb.Get(ctx, k).Result(); err != nil || v != "v"+k {
			t.Fatalf("GET %s through the cluster client after failover = %q, %v", k, v, err)
		}
	}
	if err := rdb.Set(ctx, key, "after", 0).Err(); err != nil {
		t.Fatalf("SET %s through the cluster client after failover: %v", key, err)
	}
	t.Logf("whole test took %s", time.Since(began).Round(time.Millisecond))
}

func addrsOf(nodes []*Server) []string {
	addrs := make([]string, len(nodes))
	for i, s := range nodes {
		addrs[i] = s.Addr
	}
	return addrs
}
