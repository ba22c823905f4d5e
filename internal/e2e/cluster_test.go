package e2e

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/orderexpiry/orderexpiry/internal/order"
	"github.com/orderexpiry/orderexpiry/internal/redistest"
	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// clusterPartitions is the servers' default number of partitions on a
// cluster.
const clusterPartitions = 64

// TestClusterFailover runs three replicas of the server on a Redis Cluster
// of three masters and three replicas, expires tens of thousands of orders,
// and kills a master with SIGKILL in the middle: its replica takes over.
// Nothing acknowledged is lost, nothing expires twice, every watcher sees
// every event, and checkout, get, complete and cancel keep working: with
// UNAVAILABLE only for the partitions of the dead master, only until the
// failover is over. The servers run with -durability=strict: the promoted
// replica has no replica of its own, so the writes of its partitions are
// refused until the killed master, restarted, rejoins as its replica.
func TestClusterFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("Redis Cluster failover: not in -short")
	}
	c := redistest.StartCluster(t, 3, 1)
	env := map[string]string{"REDIS_CLUSTER_ADDRS": strings.Join(c.Addrs(), ","), "DURABILITY": "strict"}
	reps := []*server{startServer(t, env), startServer(t, env), startServer(t, env)}
	var fs []*follower
	for i := range reps {
		fs = append(fs, follow(t, anyAlive(i, reps...), "0-0"))
	}

	victim := c.Masters(t)[0]
	onVictim := map[int]bool{}
	for p := range clusterPartitions {
		if c.MasterOf(t, fmt.Sprintf("oe:{%d}:events", p)) == victim {
			onVictim[p] = true
		}
	}

	// Calls of every kind go on during the whole test, on every replica.
	ops := startSideOps(roundRobin(reps...))

	// Each order is due 3 to 11 s after its checkout, so that expirations
	// go on from 3 s after the start until after the failover whether the
	// checkouts take 4 s (an idle machine) or half a minute (a busy one).
	const n = 20000
	start := time.Now()
	var acked, gaveUp []string
	checkedOut := make(chan struct{})
	go func() {
		defer close(checkedOut)
		// Checkouts of the dead master's partitions may be refused for
		// longer than their ttl during the failover.
		acked, gaveUp = checkoutEach(t, roundRobin(reps...), ids("cf-", n), func(i int) time.Time {
			return time.Now().Add(3*time.Second + time.Duration(i%1000)*8*time.Millisecond)
		})
		t.Logf("%d checkouts acknowledged %v after the start, %d given up", len(acked), time.Since(start), len(gaveUp))
	}()

	time.Sleep(time.Until(start.Add(6 * time.Second))) // in the middle of the expirations
	killedAt := time.Now()
	victim.Kill()
	// The replicas' health during the failover, sampled on one of them.
	var healthSamples, notServing int
	sampling := make(chan struct{})
	go func() {
		defer close(sampling)
		hc := healthpb.NewHealthClient(reps[0].Conn)
		for time.Since(killedAt) < 5*time.Second {
			h, err := hc.Check(context.Background(), &healthpb.HealthCheckRequest{})
			healthSamples++
			if err != nil || h.GetStatus() != healthpb.HealthCheckResponse_SERVING {
				notServing++
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	c.WaitFailover(t)
	failedOver := time.Now()
	<-sampling
	t.Logf("failover: %v from the kill until every slot had a master again", failedOver.Sub(killedAt))
	// The killed master comes back (empty: no persistence) and rejoins
	// as the replica of the one that replaced it.
	victim.Restart(t)
	c.WaitFailover(t)
	rejoined := time.Now()
	t.Logf("the killed master rejoined as a replica %v after the kill", rejoined.Sub(killedAt))
	time.Sleep(3 * time.Second) // calls after the failover
	calls := ops.stop()
	<-checkedOut
	// Only the dead master's partitions may refuse a checkout for good.
	for _, id := range gaveUp {
		if p := order.PartitionOf(id, clusterPartitions); !onVictim[p] {
			t.Errorf("checkout %s (partition %d, not on the dead master) refused until its deadline", id, p)
		}
	}

	l := checkClusterLedger(t, roundRobin(reps...), acked, fs, 30*time.Second)

	// Calls failed only with UNAVAILABLE, only on the dead master's
	// partitions, and only while they had no master (plus the second or two
	// the client takes to learn the new topology).
	const learn = 3 * time.Second
	var during, failed, failedOutside int
	for _, call := range calls {
		if call.at.After(killedAt) && call.at.Before(failedOver) {
			during++
		}
		if call.code == codes.OK {
			continue
		}
		failed++
		p := order.PartitionOf(call.id, clusterPartitions)
		switch {
		case call.code != codes.Unavailable:
			t.Errorf("%s %s at %v: %v; want OK or UNAVAILABLE", call.op, call.id, call.at.Sub(killedAt), call.code)
		case !onVictim[p] || call.end.Before(killedAt) || call.at.After(rejoined.Add(learn)):
			failedOutside++
			t.Errorf("%s %s (partition %d, on the dead master: %v) UNAVAILABLE %v after the kill; the failover took %v, the rejoin %v",
				call.op, call.id, p, onVictim[p], call.at.Sub(killedAt), failedOver.Sub(killedAt), rejoined.Sub(killedAt))
		}
	}
	okOther := 0
	for _, call := range calls {
		if call.code == codes.OK && call.at.After(killedAt) && call.at.Before(failedOver) && !onVictim[order.PartitionOf(call.id, clusterPartitions)] {
			okOther++
		}
	}
	if during > 0 && okOther == 0 {
		t.Errorf("no call on the live masters' partitions succeeded during the failover")
	}
	// A completion or cancellation that was acknowledged holds: those
	// orders never expire, even on the master that replaced a dead one.
	expired := map[string]bool{}
	for _, e := range l.log {
		expired[e.orderID] = true
	}
	closedOK := 0
	for _, call := range calls {
		if (call.op == "complete" || call.op == "cancel") && call.code == codes.OK {
			closedOK++
			if expired[call.id] {
				t.Errorf("%s %s was acknowledged, yet the order expired", call.op, call.id)
			}
		}
	}
	// A watch over REST resumes from a cursor of every partition, taken in
	// the middle of a follower's stream: it replays exactly what the
	// follower received after it.
	got := fs[0].received()
	mid := got[len(got)/2]
	if parts := strings.Count(mid.GetCursor(), ",") + 1; parts != clusterPartitions {
		t.Errorf("cursor %.40s… has %d parts, want %d", mid.GetCursor(), parts, clusterPartitions)
	}
	// Side orders whose complete or cancel failed may still expire after
	// got was read: events that are new to the follower are let pass, one
	// it had before the cursor is not.
	before := map[string]bool{}
	for _, ev := range got[:len(got)/2+1] {
		before[ev.GetOrderId()] = true
	}
	want := map[string]bool{}
	for _, ev := range got[len(got)/2+1:] {
		want[ev.GetOrderId()] = true
	}
	lines := reps[1].restWatch(t, url.QueryEscape(mid.GetCursor()))
	sent := map[string]bool{}
	for len(want) > 0 {
		ev := lines.next(t)
		id, _ := ev["orderId"].(string)
		if before[id] || sent[id] || id == "" {
			t.Fatalf("REST watch after %s's cursor sent %q: it came at or before the cursor, or twice (line %v)", mid.GetOrderId(), id, ev)
		}
		sent[id] = true
		delete(want, id)
	}

	// Lateness apart for the partitions that kept their master: the dead
	// master's orders wait for the failover.
	var kept, moved []*pb.ExpirationEvent
	for _, ev := range fs[0].received() {
		if onVictim[order.PartitionOf(ev.GetOrderId(), clusterPartitions)] {
			moved = append(moved, ev)
		} else {
			kept = append(kept, ev)
		}
	}
	keptP99, keptMax := lateness(kept)
	movedP99, movedMax := lateness(moved)
	result(t, "events=%d lost=%d doubled=%d failover=%s rejoined=%s calls=%d during_failover=%d unavailable=%d closed_ok=%d lateness_live_masters_p99=%s max=%s lateness_failed_over_p99=%s max=%s health_not_serving=%d/%d",
		len(l.log), l.Lost, l.Doubled, failedOver.Sub(killedAt).Round(time.Millisecond), rejoined.Sub(killedAt).Round(time.Millisecond), len(calls), during, failed, closedOK,
		keptP99, keptMax, movedP99, movedMax, notServing, healthSamples)
}

// sideCall is one call of the side load, made from at to end.
type sideCall struct {
	at   time.Time
	end  time.Time
	op   string
	id   string
	code codes.Code
}

type sideOps struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	calls  []sideCall
}

// startSideOps checks out orders due in two seconds and gets, completes or
// cancels each right away, in a loop, recording every call.
func startSideOps(pick func() *server) *sideOps {
	ctx, cancel := context.WithCancel(context.Background())
	o := &sideOps{cancel: cancel}
	for w := range 4 {
		o.wg.Go(func() {
			for k := 0; ctx.Err() == nil; k++ {
				id := fmt.Sprintf("side-%d-%d", w, k)
				s := pick()
				if !o.call(ctx, "checkout", id, func(ctx context.Context) error {
					_, err := s.Client.Checkout(ctx, &pb.CheckoutRequest{OrderId: id, Ttl: ttl(2 * time.Second)})
					return err
				}) {
					continue
				}
				o.call(ctx, "get", id, func(ctx context.Context) error {
					_, err := s.Client.GetOrder(ctx, &pb.GetOrderRequest{OrderId: id})
					return err
				})
				if k%2 == 0 {
					o.call(ctx, "complete", id, func(ctx context.Context) error {
						_, err := s.Client.CompleteOrder(ctx, &pb.CompleteOrderRequest{OrderId: id})
						return err
					})
				} else {
					o.call(ctx, "cancel", id, func(ctx context.Context) error {
						_, err := s.Client.CancelOrder(ctx, &pb.CancelOrderRequest{OrderId: id})
						return err
					})
				}
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
	return o
}

func (o *sideOps) call(ctx context.Context, op, id string, f func(context.Context) error) bool {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	at := time.Now()
	err := f(cctx)
	if ctx.Err() != nil {
		return false
	}
	o.mu.Lock()
	o.calls = append(o.calls, sideCall{at: at, end: time.Now(), op: op, id: id, code: status.Code(err)})
	o.mu.Unlock()
	return err == nil
}

func (o *sideOps) stop() []sideCall {
	o.cancel()
	o.wg.Wait()
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.calls)
}

// checkClusterLedger is checkLedger for a cluster: the log is one stream
// per partition, and a follower must have received each partition's
// stream, in order; the partitions' events interleave as they came.
func checkClusterLedger(t *testing.T, pick func() *server, acked []string, followers []*follower, timeout time.Duration) ledger {
	t.Helper()
	log := readLog(t, pick, acked, timeout)
	l := tally(acked, log)
	parts := make([][]string, clusterPartitions)
	for _, e := range log {
		p := order.PartitionOf(e.orderID, clusterPartitions)
		parts[p] = append(parts[p], e.orderID)
	}
	for i, f := range followers {
		f.waitFor(t, len(log), timeout)
		byPart := make([][]string, clusterPartitions)
		for _, ev := range f.received() {
			p := order.PartitionOf(ev.GetOrderId(), clusterPartitions)
			byPart[p] = append(byPart[p], ev.GetOrderId())
		}
		for p, logged := range parts {
			if !slices.Equal(byPart[p], logged) {
				t.Errorf("follower %d: partition %d: received %d events, the log holds %d, or in another order", i, p, len(byPart[p]), len(logged))
			}
		}
	}
	if l.Lost > 0 || l.Doubled > 0 {
		t.Errorf("lost %d, doubled %d of %d acknowledged orders", l.Lost, l.Doubled, len(acked))
	}
	return l
}
