package e2e

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2/client"
	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/orderexpiry/orderexpiry/internal/redistest"
	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// TestPartitionedMaster splits the old master from its replicas and its
// sentinels, in the manner of Jepsen's Redis tests, while the service still
// reaches it: the sentinels promote a replica behind its back, and the old
// master, once the split heals, becomes a replica of the new one and drops
// what it took meanwhile.
//
// The replicas replicate through Toxiproxy, one proxy each, and the split
// blackholes both (a timeout toxic: the master still counts its replicas
// as connected, as it would behind a real partition). The sentinels reach
// the master at the address they hand the service, so a proxy there would
// cut the service too: the sentinels, which connect as Redis's default
// user, are cut instead by taking every command from that user (ACL), while
// the service connects as its own user. Checkouts run from 4 goroutines
// throughout. In the strict mode no checkout confirmed on either side of
// the split is lost; in the fast mode some are (the subtest asserts it,
// which shows the split opens the window that strict closes).
func TestPartitionedMaster(t *testing.T) {
	faultTest(t)
	durabilityModes(t, partitionedMaster)
}

// durabilityModes runs a fault test in the strict durability mode, which
// must lose no confirmed checkout, and in the fast mode, whose run must
// lose some to show that the fault opens the window strict closes.
func durabilityModes(t *testing.T, run func(t *testing.T, mode string)) {
	for _, mode := range []string{"strict", "fast"} {
		t.Run(mode, func(t *testing.T) { run(t, mode) })
	}
}

func partitionedMaster(t *testing.T, mode string) {
	ctx := context.Background()
	tp := startToxiproxy(t)
	master := redistest.Start(t, "--repl-diskless-sync-delay", "0")
	// The service's user, on every node: a replica promoted later must
	// know it too.
	user := func(s *redistest.Server) {
		t.Helper()
		if err := s.Client(t).Do(ctx, "ACL", "SETUSER", "svc", "on", ">svc-pw", "~*", "&*", "+@all").Err(); err != nil {
			t.Fatal(err)
		}
	}
	user(master)
	var replicas []*redistest.Server
	var proxies []*toxiproxy.Proxy
	for i := range 2 {
		px, err := tp.CreateProxy(fmt.Sprintf("replica-%d", i), "127.0.0.1:0", master.Addr)
		if err != nil {
			t.Fatal(err)
		}
		proxies = append(proxies, px)
		host, port, _ := net.SplitHostPort(px.Listen)
		r := redistest.Start(t, "--repl-diskless-sync-delay", "0", "--replicaof", host, port)
		user(r)
		replicas = append(replicas, r)
	}
	admin := master.Client(t)
	waitUntil(t, 10*time.Second, "two replicas online", func() bool {
		return strings.Count(admin.Info(ctx, "replication").Val(), "state=online") == 2
	})
	sentinels := redistest.StartSentinels(t, master.Addr, len(replicas), 3)
	addrs := make([]string, len(sentinels))
	for i, s := range sentinels {
		addrs[i] = s.Addr
	}
	env := map[string]string{
		"REDIS_SENTINEL_ADDRS":  "redis://svc:svc-pw@" + addrs[0] + "?addr=" + addrs[1] + "&addr=" + addrs[2],
		"REDIS_SENTINEL_MASTER": redistest.SentinelMaster,
		"DURABILITY":            mode,
	}
	s := startServer(t, env)

	stop := checkoutLoad(ctx, s, "pm", 5*time.Second, 5*time.Millisecond)
	time.Sleep(2 * time.Second)

	// The split: the replicas' links blackholed, the sentinels' commands
	// refused. The service's own connections are untouched.
	split := time.Now()
	for _, px := range proxies {
		for _, stream := range []string{"upstream", "downstream"} {
			if _, err := px.AddToxic("split-"+stream, "timeout", stream, 1, toxiproxy.Attributes{"timeout": 0}); err != nil {
				t.Fatal(err)
			}
		}
	}
	svc := redis.NewClient(&redis.Options{Addr: master.Addr, Username: "svc", Password: "svc-pw"})
	t.Cleanup(func() { svc.Close() })
	if err := svc.Do(ctx, "ACL", "SETUSER", "default", "-@all").Err(); err != nil {
		t.Fatal(err)
	}
	// The sentinels promote a replica.
	var promoted *redistest.Server
	waitUntil(t, 30*time.Second, "the sentinels to promote a replica", func() bool {
		for _, s := range sentinels {
			a, err := s.Client(t).Do(ctx, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", redistest.SentinelMaster).StringSlice()
			if err != nil || len(a) != 2 || net.JoinHostPort(a[0], a[1]) == master.Addr {
				return false
			}
			for _, r := range replicas {
				if r.Addr == net.JoinHostPort(a[0], a[1]) {
					promoted = r
				}
			}
		}
		return promoted != nil
	})
	failedOver := time.Since(split)
	time.Sleep(3 * time.Second) // calls on the new master

	// The split heals: the sentinels make the old master a replica of the
	// new one, which drops what it took meanwhile.
	for _, px := range proxies {
		for _, stream := range []string{"upstream", "downstream"} {
			if err := px.RemoveToxic("split-" + stream); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := svc.Do(ctx, "ACL", "SETUSER", "default", "+@all").Err(); err != nil {
		t.Fatal(err)
	}
	healed := time.Now()
	waitUntil(t, 30*time.Second, "the old master to replicate the new one", func() bool {
		info := svc.Info(ctx, "replication").Val()
		return strings.Contains(info, "role:slave") && strings.Contains(info, "master_link_status:up")
	})
	rejoined := time.Since(healed)
	time.Sleep(time.Second)
	calls := stop()

	// Every confirmed checkout, on either side of the split, is pending.
	var ok, refused, other, lost, okDuringSplit, lostDuringSplit int
	for _, c := range calls {
		switch c.code {
		case codes.OK:
			ok++
		case codes.Unavailable, codes.DeadlineExceeded:
			refused++
			continue
		default:
			other++
			t.Errorf("checkout %s: %v %s; want OK or UNAVAILABLE", c.id, c.code, c.message)
			continue
		}
		during := c.end.After(split) && c.at.Before(split.Add(failedOver))
		if during {
			okDuringSplit++
		}
		if confirmedLost(ctx, t, s, c.id, mode == "strict", fmt.Sprintf("after the split healed (confirmed %v after the split)", c.end.Sub(split).Round(time.Millisecond))) {
			lost++
			if during {
				lostDuringSplit++
			}
		}
	}
	result(t, "mode=%s calls=%d confirmed=%d refused=%d other=%d confirmed_during_split=%d lost=%d (during the split %d) failover=%s rejoined_after_heal=%s",
		mode, len(calls), ok, refused, other, okDuringSplit, lost, lostDuringSplit, failedOver.Round(time.Millisecond), rejoined.Round(time.Millisecond))
	if ok < 100 {
		t.Errorf("only %d checkouts were confirmed: the load did not run", ok)
	}
	if mode == "fast" && lost == 0 {
		t.Errorf("fast mode lost nothing: the split did not open the window this test is about")
	}
}

// getOrder reads an order, retrying while the service answers UNAVAILABLE
// (it may be following the master that the sentinels name).
func getOrder(ctx context.Context, s *server, id string) (*pb.Order, error) {
	deadline := time.Now().Add(20 * time.Second)
	for {
		o, err := s.Client.GetOrder(ctx, &pb.GetOrderRequest{OrderId: id})
		if status.Code(err) != codes.Unavailable || time.Now().After(deadline) {
			return o, err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// loadCall is one checkout of checkoutLoad, as it went.
type loadCall struct {
	id      string
	at, end time.Time
	code    codes.Code
	message string
}

// checkoutLoad checks out orders due in an hour, prefix-<worker>-<n>, from
// 4 goroutines, each call bounded by timeout and followed by pause, until
// the stop it returns is called; stop returns every call.
func checkoutLoad(ctx context.Context, s *server, prefix string, timeout, pause time.Duration) (stop func() []loadCall) {
	var (
		mu      sync.Mutex
		calls   []loadCall
		stopped atomic.Bool
		wg      sync.WaitGroup
	)
	for w := range 4 {
		wg.Go(func() {
			for k := 0; !stopped.Load(); k++ {
				id := fmt.Sprintf("%s-%d-%d", prefix, w, k)
				cctx, cancel := context.WithTimeout(ctx, timeout)
				at := time.Now()
				_, err := s.Client.Checkout(cctx, &pb.CheckoutRequest{OrderId: id, Ttl: ttl(time.Hour)})
				cancel()
				mu.Lock()
				calls = append(calls, loadCall{id: id, at: at, end: time.Now(), code: status.Code(err), message: status.Convert(err).Message()})
				mu.Unlock()
				time.Sleep(pause)
			}
		})
	}
	return func() []loadCall {
		stopped.Store(true)
		wg.Wait()
		return calls
	}
}

// confirmedLost reads an order whose checkout the service confirmed: it
// must be pending. It says whether the order is gone (NOT_FOUND), which is
// an error where keep is set; when says at what point it was read.
func confirmedLost(ctx context.Context, t *testing.T, s *server, id string, keep bool, when string) bool {
	t.Helper()
	o, err := getOrder(ctx, s, id)
	switch {
	case status.Code(err) == codes.NotFound:
		if keep {
			t.Errorf("%s was confirmed and is NOT_FOUND %s", id, when)
		}
		return true
	case err != nil:
		t.Errorf("GetOrder(%s): %v", id, err)
	case o.GetStatus() != pb.OrderStatus_ORDER_STATUS_PENDING:
		t.Errorf("%s is %v %s; want pending", id, o.GetStatus(), when)
	}
	return false
}
