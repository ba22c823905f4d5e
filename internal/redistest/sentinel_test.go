package redistest_test

import (
	"slices"
	"testing"
	"time"

	"github.com/orderexpiry/orderexpiry/internal/redistest"
)

// TestSentinelFailover starts a master with two replicas and three
// sentinels, kills the master and waits until the sentinels have promoted a
// replica, which the other replica then follows.
func TestSentinelFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("Sentinel failover: skipped with -short")
	}
	sn := redistest.StartSentinel(t, 2, 3, "--requirepass", "pw")
	old := sn.Master(t)
	if old != sn.Nodes[0] {
		t.Fatalf("master is %s, want the first node %s", old.Addr, sn.Nodes[0].Addr)
	}
	if err := old.Client(t).Set(t.Context(), "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if n, err := old.Client(t).Do(t.Context(), "WAIT", 2, 1000).Int(); err != nil || n != 2 {
		t.Fatalf("WAIT 2: %d, %v; want both replicas to have the write", n, err)
	}
	old.Kill()
	start := time.Now()
	m := sn.WaitFailover(t, old)
	t.Logf("failover in %v", time.Since(start))
	if m == old || !slices.Contains(sn.Nodes[1:], m) {
		t.Fatalf("new master %s is not one of the replicas", m.Addr)
	}
	if v, err := m.Client(t).Get(t.Context(), "k").Result(); err != nil || v != "v" {
		t.Errorf("GET k on the new master: %q, %v; want the value written before the failover", v, err)
	}
}
