package redisstore_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/orderexpiry/orderexpiry/internal/order"
	"github.com/orderexpiry/orderexpiry/internal/redisstore"
	"github.com/orderexpiry/orderexpiry/internal/redistest"
)

// TestClusterSpreadsOrders checks out 30,000 orders on a cluster of three
// masters: each master holds between 25% and 42% of them, the store
// subscribes to every master, and orders of every partition expire.
func TestClusterSpreadsOrders(t *testing.T) {
	if testing.Short() {
		t.Skip("a Redis Cluster: skipped with -short")
	}
	c := redistest.StartCluster(t, 3, 0)
	rdb, err := redisstore.NewClusterClient(fmt.Sprintf("%s,%s", c.Addrs()[0], c.Addrs()[1]), redisstore.TLSFiles{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.Close() })
	const partitions = 64
	s := redisstore.New(rdb, redisstore.Options{Retention: time.Hour, Logger: testLogger(t), Partitions: partitions})
	run(t, s)

	if err := s.Ping(t.Context()); err != nil {
		t.Errorf("Ping: %v", err)
	}

	const n = 30000
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("spread-%d", i)
	}
	if err := s.CheckoutMany(t.Context(), ids, time.Hour, ""); err != nil {
		t.Fatalf("checkouts: %v", err)
	}
	for _, m := range c.Masters(t) {
		var pending int64
		for p := range partitions {
			if c.MasterOf(t, fmt.Sprintf("oe:{%d}:pending", p)) != m {
				continue
			}
			k, err := m.Client(t).HLen(t.Context(), fmt.Sprintf("oe:{%d}:pending", p)).Result()
			if err != nil {
				t.Fatal(err)
			}
			pending += k
		}
		share := float64(pending) / n
		t.Logf("master %s holds %d pending orders (%.1f%%)", m.Addr, pending, 100*share)
		if share < 0.25 || share > 0.42 {
			t.Errorf("master %s holds %.1f%% of the orders, want 25%% to 42%%", m.Addr, 100*share)
		}
	}

	deadline := time.Now().Add(10 * time.Second)
	for s.Masters() != 3 || !s.Subscribed() {
		if time.Now().After(deadline) {
			t.Fatalf("subscribed to %d masters (all up: %v), want 3", s.Masters(), s.Subscribed())
		}
		time.Sleep(10 * time.Millisecond)
	}

	// One order due soon in every partition: each expires once, on time,
	// into its own partition's log.
	due := make([]string, partitions)
	for p := range partitions {
		for i := 0; due[p] == ""; i++ {
			if cand := fmt.Sprintf("due-%d-%d", p, i); order.PartitionOf(cand, partitions) == p {
				due[p] = cand
			}
		}
		if _, _, err := s.Checkout(t.Context(), due[p], 300*time.Millisecond, nil); err != nil {
			t.Fatalf("Checkout(%s): %v", due[p], err)
		}
	}
	for p, id := range due {
		evs, err := s.Events(t.Context(), p, order.Offset{}, 10, 5*time.Second)
		if err != nil || len(evs) != 1 || evs[0].OrderID != id || evs[0].Partition != p {
			t.Fatalf("partition %d: Events = %v, %v; want the one expiry of %s", p, evs, err, id)
		}
		if late := evs[0].ExpiredAt.Sub(evs[0].Deadline); late < 0 || late > 250*time.Millisecond {
			t.Errorf("partition %d: expired %v after the deadline", p, late)
		}
	}

	// Stats reads every partition, across the masters, in one pipeline.
	if _, err := s.Complete(t.Context(), ids[0]); err != nil {
		t.Fatal(err)
	}
	st, err := s.Stats(t.Context())
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	if st.Pending != n-1 || st.Expired != partitions || st.Completed != 1 || st.Cancelled != 0 || len(st.Partitions) != partitions || st.Since.IsZero() {
		t.Errorf("Stats: pending %d, expired %d, completed %d, cancelled %d, %d partitions, since %v; want %d, %d, 1, 0, %d, set",
			st.Pending, st.Expired, st.Completed, st.Cancelled, len(st.Partitions), st.Since, n-1, partitions, partitions)
	}
	for p, ps := range st.Partitions {
		if ps.Events != 1 || ps.NextDeadline.IsZero() {
			t.Errorf("Stats: partition %d: %+v, want its one event and a next deadline", p, ps)
		}
	}

	// One master that may evict is enough to refuse checkouts: Ping
	// reads the policy of every master and names the one to fix.
	redisstore.SetPolicyEvery(t, 0)
	m := c.Masters(t)[1]
	must(t, m.Client(t).ConfigSet(t.Context(), "maxmemory", "1gb").Err())
	must(t, m.Client(t).ConfigSet(t.Context(), "maxmemory-policy", "allkeys-lru").Err())
	if err := s.Ping(t.Context()); order.KindOf(err) != order.KindFailedPrecondition || !strings.Contains(err.Error(), m.Addr) {
		t.Errorf("Ping with allkeys-lru on master %s: %v; want FailedPrecondition naming it", m.Addr, err)
	}
	must(t, m.Client(t).ConfigSet(t.Context(), "maxmemory-policy", "noeviction").Err())
	if err := s.Ping(t.Context()); err != nil {
		t.Errorf("Ping with noeviction on every master again: %v", err)
	}
}

// TestNewClusterClientInput checks the errors for seeds that cannot be
// used: each names what to fix, and none repeats a password.
func TestNewClusterClientInput(t *testing.T) {
	tests := []struct {
		name, spec, want string
	}{
		{"not host:port", "127.0.0.1:7001,localhost", `"localhost" is not a host:port`},
		{"empty seed", "127.0.0.1:7001,", `"" is not a host:port`},
		{"bad URL", "redis://svc:s3cret@[::1:7001", "not a valid redis:// or rediss:// cluster URL"},
		{"CA without TLS", "redis://127.0.0.1:7001", "not a rediss:// URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			files := redisstore.TLSFiles{}
			if tt.name == "CA without TLS" {
				files.CA = "ca.pem"
			}
			_, err := redisstore.NewClusterClient(tt.spec, files)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("NewClusterClient(%q) = %v, want an error with %q", tt.spec, err, tt.want)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Errorf("the error repeats the password: %v", err)
			}
		})
	}
	rdb, err := redisstore.NewClusterClient("127.0.0.1:7001, 127.0.0.1:7002", redisstore.TLSFiles{})
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	if got := strings.Join(rdb.Options().Addrs, ","); got != "127.0.0.1:7001,127.0.0.1:7002" {
		t.Errorf("seeds = %s", got)
	}
}

// TestClusterTopologyFollowed checks that the store knows which partitions'
// masters have a replica (their writes wait for it), and that after a
// master fails over it subscribes to the new master, whose partitions have
// no replica left.
func TestClusterTopologyFollowed(t *testing.T) {
	if testing.Short() {
		t.Skip("a Redis Cluster failover: skipped with -short")
	}
	c := redistest.StartCluster(t, 3, 1)
	rdb, err := redisstore.NewClusterClient(strings.Join(c.Addrs(), ","), redisstore.TLSFiles{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.Close() })
	const partitions = 8
	s := redisstore.New(rdb, redisstore.Options{Retention: time.Hour, Logger: testLogger(t), Partitions: partitions})
	run(t, s)
	// The store reads the topology from any node, at its start and every
	// topologyEvery after: its first reads may give no replicas (once, in
	// CI, they did), a later one must give each partition's.
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, err := s.Replicas(t.Context())
		if err == nil && slices.Equal(got, []int{1, 1, 1, 1, 1, 1, 1, 1}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("replicas by partition = %v, %v; want 1 each within 5 s", got, err)
		}
		time.Sleep(50 * time.Millisecond)
	}

	victim := c.MasterOf(t, "oe:{0}:deadlines")
	var want []int
	for p := range partitions {
		if c.MasterOf(t, fmt.Sprintf("oe:{%d}:deadlines", p)) == victim {
			want = append(want, 0)
		} else {
			want = append(want, 1)
		}
	}
	victim.Kill()
	c.WaitFailover(t)
	deadline = time.Now().Add(10 * time.Second)
	for {
		got, _ := s.Replicas(t.Context())
		if slices.Equal(got, want) && s.Masters() == 3 && s.Subscribed() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the failover: replicas by partition %v (want %v), subscribed to %d masters (all up: %v), want 3", got, want, s.Masters(), s.Subscribed())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, _, err := s.Checkout(t.Context(), "after-failover", time.Minute, nil); err != nil {
		t.Errorf("Checkout after the failover: %v", err)
	}
	// Every master, the promoted replica included, publishes expired-key
	// events: the subscriber enabled them on each.
	for _, m := range c.Masters(t) {
		flags := m.Client(t).ConfigGet(t.Context(), "notify-keyspace-events").Val()["notify-keyspace-events"]
		if !strings.Contains(flags, "E") || !strings.ContainsAny(flags, "xA") {
			t.Errorf("master %s: notify-keyspace-events %q, want E and x", m.Addr, flags)
		}
	}
}

// TestClusterSlotMoving moves the slot of a partition by hand, the way
// `redis-cli --cluster reshard` does, and calls the store at each step: a
// checkout (the script and WAIT on the master's connection) and a get (a
// script through the cluster client) made while the slot is MIGRATING and
// its keys are split between the two masters (TRYAGAIN), then while all
// its keys are on the new master but the old one still owns the slot (ASK,
// then TRYAGAIN: the wake channel is never a key), both succeed once the
// slot has moved, within their time bound; and a completion made right
// after the slot moved back, with the client's slot map still naming the
// other master (MOVED), succeeds as well.
func TestClusterSlotMoving(t *testing.T) {
	if testing.Short() {
		t.Skip("a Redis Cluster: skipped with -short")
	}
	c := redistest.StartCluster(t, 3, 1)
	rdb, err := redisstore.NewClusterClient(strings.Join(c.Addrs(), ","), redisstore.TLSFiles{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.Close() })
	s := redisstore.New(rdb, redisstore.Options{Retention: time.Hour, Logger: testLogger(t), Partitions: 1, Durability: redisstore.DurabilityStrict})
	ctx := t.Context()
	for i := range 20 {
		if _, _, err := s.Checkout(ctx, fmt.Sprintf("before-%d", i), time.Minute, nil); err != nil {
			t.Fatal(err)
		}
	}

	const key = "oe:{0}:deadlines"
	src := c.MasterOf(t, key)
	var dst *redistest.Server
	for _, m := range c.Masters(t) {
		if m != src {
			dst = m
			break
		}
	}
	from, to := src.Client(t), dst.Client(t)
	slot := rdb.ClusterKeySlot(ctx, key).Val()
	fromID, toID := from.ClusterMyID(ctx).Val(), to.ClusterMyID(ctx).Val()
	must := func(cmd redis.Cmder) {
		t.Helper()
		if err := cmd.Err(); err != nil {
			t.Fatalf("%v: %v", cmd.Args(), err)
		}
	}
	must(to.Do(ctx, "CLUSTER", "SETSLOT", slot, "IMPORTING", fromID))
	must(from.Do(ctx, "CLUSTER", "SETSLOT", slot, "MIGRATING", toID))
	host, port, _ := strings.Cut(dst.Addr, ":")
	migrate := func(keys []string) {
		t.Helper()
		args := []any{"MIGRATE", host, port, "", 0, 5000, "KEYS"}
		for _, k := range keys {
			args = append(args, k)
		}
		must(from.Do(ctx, args...))
	}
	keys := from.ClusterGetKeysInSlot(ctx, int(slot), 1000).Val()
	if len(keys) < 3 {
		t.Fatalf("slot %d holds %d keys: %v", slot, len(keys), keys)
	}
	retries := s.SlotRetries()

	// calls checks out an order and gets another one, each on its own
	// goroutine; wait wants both to succeed.
	calls := func(id string) (wait func()) {
		errs := make(chan error, 2)
		start := time.Now()
		go func() {
			_, _, err := s.Checkout(ctx, id, time.Minute, nil)
			errs <- err
		}()
		go func() {
			_, err := s.Get(ctx, "before-0")
			errs <- err
		}()
		return func() {
			t.Helper()
			for range 2 {
				if err := <-errs; err != nil {
					t.Errorf("%s: a call made while the slot moved: %v after %s", id, err, time.Since(start))
				}
			}
		}
	}
	const hold = 150 * time.Millisecond
	// Keys split between the masters: TRYAGAIN from both.
	migrate(keys[:len(keys)/2])
	split := calls("split")
	time.Sleep(hold)
	// Every key on the new master, the slot still the old one's: ASK.
	migrate(keys[len(keys)/2:])
	asked := calls("asked")
	time.Sleep(hold)
	for _, m := range []*redistest.Server{dst, src} {
		must(m.Client(t).Do(ctx, "CLUSTER", "SETSLOT", slot, "NODE", toID))
	}
	for _, m := range c.Masters(t) {
		if m != src && m != dst {
			must(m.Client(t).Do(ctx, "CLUSTER", "SETSLOT", slot, "NODE", toID))
		}
	}
	split()
	asked()
	if n := s.SlotRetries() - retries; n == 0 {
		t.Errorf("no call was retried while the slot moved: the test did not meet a moving slot")
	} else {
		t.Logf("%d retries while the slot moved", n)
	}

	// The slot moves back at once, keys and all, once every node knows
	// of the move and the client routes the slot to the new master: its
	// slot map then still names the new master, which answers MOVED.
	c.WaitFailover(t)
	for deadline := time.Now().Add(5 * time.Second); ; {
		rdb.ReloadState(ctx)
		time.Sleep(250 * time.Millisecond) // the reload runs in the background
		if m, err := rdb.MasterForKey(ctx, key); err == nil && m.Options().Addr == dst.Addr {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the client does not route slot %d to %s", slot, dst.Addr)
		}
	}
	must(from.Do(ctx, "CLUSTER", "SETSLOT", slot, "IMPORTING", toID))
	must(to.Do(ctx, "CLUSTER", "SETSLOT", slot, "MIGRATING", fromID))
	back := []any{"MIGRATE", strings.Split(src.Addr, ":")[0], strings.Split(src.Addr, ":")[1], "", 0, 5000, "KEYS"}
	for _, k := range to.ClusterGetKeysInSlot(ctx, int(slot), 1000).Val() {
		back = append(back, k)
	}
	must(to.Do(ctx, back...))
	for _, m := range []*redistest.Server{src, dst} {
		must(m.Client(t).Do(ctx, "CLUSTER", "SETSLOT", slot, "NODE", fromID))
	}
	retries = s.SlotRetries()
	if _, err := s.Complete(ctx, "before-1"); err != nil {
		t.Errorf("complete after the slot moved back: %v", err)
	}
	if s.SlotRetries() == retries {
		t.Errorf("the completion after the slot moved back was not retried: it did not meet MOVED")
	}
	for _, id := range []string{"split", "asked", "before-2"} {
		o, err := s.Get(ctx, id)
		if err != nil || o.Status != order.StatusPending {
			t.Errorf("order %s after the move: %+v, %v; want it pending", id, o, err)
		}
	}
	if o, err := s.Get(ctx, "before-1"); err != nil || o.Status != order.StatusCompleted {
		t.Errorf("order before-1 after its completion: %+v, %v; want it completed", o, err)
	}
}

// TestClusterBulkChange runs bulk operations on a cluster of three masters:
// the operation's own keys and each partition's are in their own slots, on
// every master. A shift and a cancel change each matching order once, and
// no other; two stores (two replicas) work them side by side.
func TestClusterBulkChange(t *testing.T) {
	if testing.Short() {
		t.Skip("a Redis Cluster: not in -short")
	}
	c := redistest.StartCluster(t, 3, 0)
	var stores []*redisstore.Store
	for range 2 {
		rdb, err := redisstore.NewClusterClient(strings.Join(c.Addrs(), ","), redisstore.TLSFiles{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { rdb.Close() })
		s := redisstore.New(rdb, redisstore.Options{Retention: time.Hour, Logger: testLogger(t), Partitions: 8})
		run(t, s)
		stores = append(stores, s)
	}
	s := stores[0]
	const n = 3000
	for _, m := range []string{"a", "b"} {
		items := make([]order.CheckoutItem, 0, 1000)
		for i := range n {
			items = append(items, order.CheckoutItem{ID: fmt.Sprintf("cb-%s-%d", m, i), TTL: time.Hour, Metadata: map[string]string{"m": m}})
			if len(items) == cap(items) {
				for _, r := range s.BatchCheckout(t.Context(), items) {
					if r.Err != nil {
						t.Fatal(r.Err)
					}
				}
				items = items[:0]
			}
		}
	}
	before, err := s.Get(t.Context(), "cb-a-7")
	if err != nil {
		t.Fatal(err)
	}
	wait := func(op order.Operation) order.Operation {
		t.Helper()
		for until := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			got, err := stores[1].GetOperation(t.Context(), op.ID)
			if err != nil {
				t.Fatal(err)
			}
			if got.Done() {
				return got
			}
			if time.Now().After(until) {
				t.Fatalf("operation not done after 20s: %+v", got)
			}
		}
	}
	shift, err := s.StartOperation(t.Context(), order.Operation{Filter: `metadata.m = "a"`, Change: order.BulkChange{Shift: time.Minute, MaxTTL: 24 * time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	cancel, err := stores[1].StartOperation(t.Context(), order.Operation{Filter: `metadata.m = "b" AND order_id = "cb-b-1*"`, Change: order.BulkChange{Cancel: true, MaxTTL: 24 * time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	if got := wait(shift); got.State != order.OpSucceeded || got.Progress != (order.Progress{Matched: n, Changed: n}) {
		t.Errorf("shift: %v %+v, want %d matched and changed", got.State, got.Progress, n)
	}
	if got := wait(cancel); got.Progress.Matched != 1111 || got.Progress.Changed != 1111 {
		t.Errorf("cancel: %+v, want the 1111 ids cb-b-1* matched and changed", got.Progress)
	}
	after, err := s.Get(t.Context(), "cb-a-7")
	if err != nil || !after.Deadline.Equal(before.Deadline.Add(time.Minute)) || after.Reschedules != 1 {
		t.Errorf("cb-a-7: due %v after %d reschedules (%v); want %v, once", after.Deadline, after.Reschedules, err, before.Deadline.Add(time.Minute))
	}
	if o, _ := s.Get(t.Context(), "cb-b-15"); o.Status != order.StatusCancelled {
		t.Errorf("cb-b-15 is %v, want cancelled", o.Status)
	}
	if o, _ := s.Get(t.Context(), "cb-b-20"); o.Status != order.StatusPending || o.Reschedules != 0 {
		t.Errorf("cb-b-20 is %v with %d reschedules, want pending and unchanged", o.Status, o.Reschedules)
	}
}

// TestClusterDeadLetterWhy: on Redis Cluster, with partitions on every
// master, dead letters say why (each partition's why hash shares its
// stream's slot), and deleting the group deletes every why hash.
func TestClusterDeadLetterWhy(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Redis Cluster")
	}
	c := redistest.StartCluster(t, 3, 0)
	rdb := c.Client(t)
	s := redisstore.New(rdb, redisstore.Options{Retention: time.Hour, Logger: testLogger(t), Partitions: 8})
	run(t, s)
	ctx := t.Context()
	if _, _, err := s.CreateGroup(ctx, order.Group{ID: "g", AckDeadline: time.Minute, MaxDeliveries: 1}, nil, 10); err != nil {
		t.Fatal(err)
	}
	const n = 24
	for i := range n {
		if _, _, err := s.Checkout(ctx, fmt.Sprintf("why-%d", i), 50*time.Millisecond, nil); err != nil {
			t.Fatal(err)
		}
	}
	var ds []order.Delivery
	for deadline := time.Now().Add(10 * time.Second); len(ds) < n; time.Sleep(20 * time.Millisecond) {
		got, err := s.Deliver(ctx, "g", "c", n)
		if err != nil {
			t.Fatal(err)
		}
		ds = append(ds, got...)
		if time.Now().After(deadline) {
			t.Fatalf("delivered %d of %d after 10s", len(ds), n)
		}
	}
	ids := make([]order.AckID, len(ds))
	for i, d := range ds {
		ids[i] = d.AckID
	}
	if _, err := s.Nack(ctx, "g", ids, 0, "out of stock"); err != nil {
		t.Fatal(err)
	}
	letters, _, err := s.DeadLetters(ctx, "g", "", 100)
	if err != nil {
		t.Fatal(err)
	}
	parts := map[int]bool{}
	for _, l := range letters {
		parts[l.Event.Partition] = true
		if l.Reason != "out of stock" || l.Attempts != 1 || l.FirstDelivered.IsZero() || l.FailedAt.Before(l.LastDelivered) {
			t.Errorf("dead letter %s: %+v; want reason %q after 1 attempt, with its times", l.ID, l, "out of stock")
		}
	}
	if len(letters) != n || len(parts) < 2 {
		t.Errorf("%d dead letters over %d partitions, want %d over several", len(letters), len(parts), n)
	}
	if err := s.DeleteGroup(ctx, "g"); err != nil {
		t.Fatal(err)
	}
	for _, m := range c.Masters(t) {
		if keys, err := m.Client(t).Keys(ctx, "*:why:*").Result(); err != nil || len(keys) != 0 {
			t.Errorf("master %s after DeleteGroup: why keys %v (%v), want none", m.Addr, keys, err)
		}
	}
}

// TestClusterDeleteGroupKeepsSettingsOnFailure: DeleteGroup deletes the
// group's settings only once every stream's group is gone. A master that
// cannot be reached fails the call, and the group is still there for the
// next DeleteGroup to finish, even where the settings' master is written
// before the dead one.
func TestClusterDeleteGroupKeepsSettingsOnFailure(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Redis Cluster")
	}
	c := redistest.StartCluster(t, 3, 0)
	const partitions = 6
	s := redisstore.New(c.Client(t), redisstore.Options{Retention: time.Hour, Logger: testLogger(t), Partitions: partitions})
	ctx := t.Context()
	if _, _, err := s.CreateGroup(ctx, order.Group{ID: "g", AckDeadline: time.Minute, MaxDeliveries: 3}, nil, 10); err != nil {
		t.Fatal(err)
	}
	// The masters in the order DeleteGroup first writes to them: that of
	// each partition's stream, in partition order. The one to kill is the
	// last, and must not hold the settings.
	settings := c.MasterOf(t, "oe:groups")
	var masters []*redistest.Server
	seen := map[string]bool{}
	for i := range partitions {
		m := c.MasterOf(t, fmt.Sprintf("oe:{%d}:events", i))
		if !seen[m.Addr] {
			seen[m.Addr] = true
			masters = append(masters, m)
		}
	}
	dead := masters[len(masters)-1]
	if dead.Addr == settings.Addr || !seen[settings.Addr] {
		t.Fatalf("the slots put the settings' master %s last or nowhere among %d: the test needs another layout", settings.Addr, len(masters))
	}
	dead.Kill()
	if err := s.DeleteGroup(ctx, "g"); err == nil {
		t.Fatalf("DeleteGroup with master %s dead: nil, want an error", dead.Addr)
	}
	if ok, err := settings.Client(t).HExists(ctx, "oe:groups", "g").Result(); err != nil || !ok {
		t.Errorf("after a DeleteGroup that failed on master %s, the settings of g are gone (%v): the next DeleteGroup cannot find the group to finish it", dead.Addr, err)
	}
}

// TestClusterClaimsTogether has the sweepers' claims of several partitions
// of one master go to Redis as one call, and a partition that master does
// not hold left out of that call and claimed by one of its own: each order
// expires once, into its own partition's log.
func TestClusterClaimsTogether(t *testing.T) {
	if testing.Short() {
		t.Skip("a Redis Cluster: skipped with -short")
	}
	c := redistest.StartCluster(t, 3, 0)
	rdb, err := redisstore.NewClusterClient(c.Addrs()[0], redisstore.TLSFiles{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.Close() })
	const partitions = 64
	// Not run: no sweeper claims but the test's calls.
	s := redisstore.New(rdb, redisstore.Options{Retention: time.Hour, Logger: testLogger(t), Partitions: partitions})
	key := func(p int, k string) string { return fmt.Sprintf("oe:{%d}:%s", p, k) }
	a := c.MasterOf(t, key(0, "deadlines"))
	var ofA []int // partitions of master a
	other := -1   // a partition of another master
	for p := range partitions {
		if c.MasterOf(t, key(p, "deadlines")) == a {
			ofA = append(ofA, p)
		} else if other < 0 {
			other = p
		}
	}
	// Three orders due in each partition p of ps.
	seq := 0
	due := func(ps ...int) {
		t.Helper()
		for _, p := range ps {
			for n := 0; n < 3; seq++ {
				if id := fmt.Sprintf("together-%d", seq); order.PartitionOf(id, partitions) == p {
					if _, _, err := s.Checkout(t.Context(), id, time.Hour, nil); err != nil {
						t.Fatal(err)
					}
					n++
				}
			}
		}
		must(t, s.MakeDue(t.Context()))
	}
	logged := func(p int) int64 {
		t.Helper()
		n, err := c.MasterOf(t, key(p, "events")).Client(t).XLen(t.Context(), key(p, "events")).Result()
		must(t, err)
		return n
	}
	evalshas := func(m *redistest.Server) int64 {
		t.Helper()
		info, err := m.Client(t).Info(t.Context(), "commandstats").Result()
		must(t, err)
		_, rest, _ := strings.Cut(info, "cmdstat_evalsha:calls=")
		var n int64
		fmt.Sscan(strings.Split(rest, ",")[0], &n)
		return n
	}

	// The script: the partitions of its master, and one it leaves alone.
	due(ofA[0], ofA[1], other, ofA[2])
	ns, err := s.ExpireMany(t.Context(), ofA[0], ofA[1], other, ofA[2])
	if err != nil || !slices.Equal(ns, []int64{3, 3, -1, 3}) {
		t.Fatalf("expire_many over partitions %d, %d, %d (another master's), %d: %v, %v; want [3 3 -1 3]", ofA[0], ofA[1], other, ofA[2], ns, err)
	}
	for _, p := range []int{ofA[0], ofA[1], ofA[2]} {
		if n := logged(p); n != 3 {
			t.Errorf("partition %d logged %d events, want 3", p, n)
		}
	}
	pending, err := c.MasterOf(t, key(other, "pending")).Client(t).HLen(t.Context(), key(other, "pending")).Result()
	if err != nil || pending != 3 || logged(other) != 0 {
		t.Errorf("partition %d, left out: %d pending (%v), %d events; want 3 pending, no event", other, pending, err, logged(other))
	}

	// The queue: claims that wait while one is in flight go together, and
	// the one of a partition the master does not hold goes alone, to its
	// own master.
	due(ofA[3], ofA[0])
	o := c.MasterOf(t, key(other, "deadlines"))
	beforeA, beforeO := evalshas(a), evalshas(o)
	ns, err = s.ClaimQueued(t.Context(), ofA[3], other, ofA[0])
	if err != nil || !slices.Equal(ns, []int64{3, 3, 3}) {
		t.Fatalf("queued claims of partitions %d, %d (another master's), %d: %v, %v; want [3 3 3]", ofA[3], other, ofA[0], ns, err)
	}
	if callsA, callsO := evalshas(a)-beforeA, evalshas(o)-beforeO; callsA != 1 || callsO != 1 {
		t.Errorf("the queued claims took %d calls on their master and %d on the other one's, want 1 and 1", callsA, callsO)
	}
	for p, want := range map[int]int64{ofA[3]: 3, other: 3, ofA[0]: 6} {
		if n := logged(p); n != want {
			t.Errorf("partition %d logged %d events, want %d", p, n, want)
		}
	}
}
