package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/orderexpiry/orderexpiry/internal/redistest"
	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// reshardSlots is how many slots TestClusterReshard moves: most of one
// master's third of the 16384, and with them about a quarter of the 64
// partitions.
const reshardSlots = 4000

// TestClusterReshard runs two replicas of the server on a Redis Cluster of
// three masters and three replicas under a steady load of checkouts, gets,
// completions and cancellations of orders due within a few seconds, and
// moves 4000 slots, the partitions in them with their orders, from one
// master to another with `redis-cli --cluster reshard` in the middle. No
// call fails: those that meet MOVED, ASK or TRYAGAIN while a partition's
// slot moves are retried. Every acknowledged order left pending expires
// exactly once, none that was acknowledged completed or cancelled expires,
// and the watchers, from 0-0, see every partition's log in order.
func TestClusterReshard(t *testing.T) {
	if testing.Short() {
		t.Skip("a Redis Cluster resharded: skipped with -short")
	}
	c := redistest.StartCluster(t, 3, 1)
	// At debug level the servers log the Redis error behind each failed
	// call, which the server log of a failed run then shows.
	env := map[string]string{"REDIS_CLUSTER_ADDRS": strings.Join(c.Addrs(), ","), "LOG_LEVEL": "debug"}
	reps := []*server{startServer(t, env), startServer(t, env)}
	var fs []*follower
	for i := range reps {
		fs = append(fs, follow(t, anyAlive(i, reps...), "0-0"))
	}

	masters := c.Masters(t)
	from, to := masters[0], masters[1]
	before := partitionMasters(t, c)

	load := startReshardLoad(roundRobin(reps...))
	time.Sleep(3 * time.Second) // orders expire before, during and after
	reshardAt := time.Now()
	took := c.Reshard(t, from, to, reshardSlots)
	reshardEnd := time.Now()
	time.Sleep(3 * time.Second)
	calls := load.stop()

	after := partitionMasters(t, c)
	var moved []int
	for p := range clusterPartitions {
		if before[p] != after[p] {
			moved = append(moved, p)
			if before[p] != from || after[p] != to {
				t.Errorf("partition %d moved from %s to %s; the resharding was from %s to %s", p, before[p].Addr, after[p].Addr, from.Addr, to.Addr)
			}
		}
	}
	if len(moved) == 0 {
		t.Fatalf("no partition moved with %d slots: the test shows nothing", reshardSlots)
	}

	// The ledger: what each order should have become, from the calls'
	// answers. An order whose completion or cancellation failed may or may
	// not expire; the goal is that there is none.
	failed := map[string]int{}
	var during int
	var expire, closed []string
	unknown := map[string]bool{}
	byID := map[string][]reshardCall{}
	for _, call := range calls {
		byID[call.id] = append(byID[call.id], call)
		if call.stopped {
			unknown[call.id] = true
			continue
		}
		if call.at.Before(reshardEnd) && call.end.After(reshardAt) {
			during++
		}
		if call.code != codes.OK {
			failed[call.op+" "+call.code.String()]++
			t.Errorf("%s %s %v after the resharding began: %v", call.op, call.id, call.at.Sub(reshardAt).Round(time.Millisecond), call.err)
		}
	}
	for id, cs := range byID {
		if cs[0].op != "checkout" || cs[0].code != codes.OK || unknown[id] {
			continue
		}
		last := cs[len(cs)-1]
		switch {
		case last.op == "complete" || last.op == "cancel":
			if last.code == codes.OK {
				closed = append(closed, id)
			} else {
				unknown[id] = true
			}
		default:
			expire = append(expire, id)
		}
	}
	l := checkClusterLedger(t, roundRobin(reps...), expire, fs, 30*time.Second)
	expired := map[string]bool{}
	for _, e := range l.log {
		expired[e.orderID] = true
	}
	for _, id := range closed {
		if expired[id] {
			t.Errorf("order %s was acknowledged completed or cancelled, yet it expired", id)
		}
	}
	for id := range expired {
		if _, ok := byID[id]; !ok {
			t.Errorf("order %s expired, but no checkout of it was made", id)
		}
	}

	var retries float64
	for _, s := range reps {
		v, err := sampleValue(s.scrape(t), "orderexpiry_redis_slot_retries_total", nil)
		if err != nil {
			t.Fatalf("orderexpiry_redis_slot_retries_total: %v", err)
		}
		retries += v
	}
	var ends []string
	for _, f := range fs {
		ends = append(ends, f.endsString())
	}
	result(t, "slots_moved=%d partitions_moved=%d reshard=%s calls=%d during_reshard=%d failed=%v slot_retries=%.0f expired=%d lost=%d doubled=%d closed_ok=%d unknown=%d watch_ends=%v",
		reshardSlots, len(moved), took.Round(time.Millisecond), len(calls), during, failed, retries,
		len(l.log), l.Lost, l.Doubled, len(closed), len(unknown), ends)
}

// partitionMasters returns the master of each partition now.
func partitionMasters(t *testing.T, c *redistest.Cluster) []*redistest.Server {
	t.Helper()
	out := make([]*redistest.Server, clusterPartitions)
	for p := range out {
		out[p] = c.MasterOf(t, fmt.Sprintf("oe:{%d}:events", p))
	}
	return out
}

// reshardCall is one call of the resharding's load, made from at to end.
type reshardCall struct {
	at, end time.Time
	op, id  string
	code    codes.Code
	err     error
	// stopped is a call cut short by the end of the load: it may or may
	// not have applied.
	stopped bool
}

// reshardLoad checks out orders due in 1 to 3 s, gets each, and completes
// a third of them, cancels a third and leaves a third to expire, in a loop
// on several workers, recording every call; no call is retried.
type reshardLoad struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	calls  []reshardCall
}

func startReshardLoad(pick func() *server) *reshardLoad {
	ctx, cancel := context.WithCancel(context.Background())
	l := &reshardLoad{cancel: cancel}
	for w := range 8 {
		l.wg.Go(func() {
			for k := 0; ctx.Err() == nil; k++ {
				id := fmt.Sprintf("rs-%d-%d", w, k)
				life := time.Second + time.Duration(k%20)*100*time.Millisecond
				s := pick()
				if !l.call(ctx, "checkout", id, func(ctx context.Context) error {
					_, err := s.Client.Checkout(ctx, &pb.CheckoutRequest{OrderId: id, Ttl: ttl(life)})
					return err
				}) {
					continue
				}
				l.call(ctx, "get", id, func(ctx context.Context) error {
					o, err := s.Client.GetOrder(ctx, &pb.GetOrderRequest{OrderId: id})
					if err == nil && o.GetStatus() != pb.OrderStatus_ORDER_STATUS_PENDING {
						return status.Errorf(codes.Internal, "order %s is %v right after its checkout, not pending", id, o.GetStatus())
					}
					return err
				})
				switch k % 3 {
				case 0:
					l.call(ctx, "complete", id, func(ctx context.Context) error {
						_, err := s.Client.CompleteOrder(ctx, &pb.CompleteOrderRequest{OrderId: id})
						return err
					})
				case 1:
					l.call(ctx, "cancel", id, func(ctx context.Context) error {
						_, err := s.Client.CancelOrder(ctx, &pb.CancelOrderRequest{OrderId: id})
						return err
					})
				}
				time.Sleep(2 * time.Millisecond)
			}
		})
	}
	return l
}

// call makes one call, bounded as a client would bound it, and records it;
// it reports whether the call succeeded and the load goes on.
func (l *reshardLoad) call(ctx context.Context, op, id string, f func(context.Context) error) bool {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	at := time.Now()
	err := f(cctx)
	l.mu.Lock()
	l.calls = append(l.calls, reshardCall{at: at, end: time.Now(), op: op, id: id, code: status.Code(err), err: err, stopped: ctx.Err() != nil})
	l.mu.Unlock()
	return err == nil && ctx.Err() == nil
}

// stop ends the load and returns its calls in the order they were made.
func (l *reshardLoad) stop() []reshardCall {
	l.cancel()
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	out := slices.Clone(l.calls)
	slices.SortStableFunc(out, func(a, b reshardCall) int { return a.at.Compare(b.at) })
	return out
}
