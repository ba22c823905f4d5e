package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/orderexpiry/orderexpiry/internal/redistest"
	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// TestDurabilitySettings: with -durability=strict on one Redis that does not
// fsync its AOF at every write, /healthz says NOT_SERVING and names the
// setting, a checkout is refused with FAILED_PRECONDITION (409 over REST)
// naming it too, and nothing is written; once Redis is set as the message
// says, the service serves. /healthz and /metrics show the mode.
func TestDurabilitySettings(t *testing.T) {
	r := redistest.Start(t)
	admin := r.Client(t)
	s := startServerWith(t, serverOptions{Unhealthy: true}, map[string]string{"REDIS_URL": r.URL(), "DURABILITY": "strict"})
	var body string
	waitUntil(t, 10*time.Second, "/healthz to name appendfsync", func() bool {
		code, b := get(t, s, "/healthz")
		body = b
		return code == http.StatusServiceUnavailable && strings.Contains(b, "appendfsync always")
	})
	if !strings.Contains(body, `"durability":"strict"`) || !strings.Contains(body, `"status":"NOT_SERVING"`) {
		t.Errorf("/healthz: %s; want NOT_SERVING with the durability strict", body)
	}
	code, out := s.restCall(t, http.MethodPost, "/v1/orders", `{"order_id":"d-1","ttl":"60s"}`)
	if msg, _ := out["message"].(string); code != http.StatusConflict || !strings.Contains(msg, "appendfsync always") {
		t.Errorf("checkout: %d %v; want 409 naming appendfsync always", code, out)
	}
	if _, err := s.Client.Checkout(context.Background(), &pb.CheckoutRequest{OrderId: "d-2", Ttl: ttl(time.Minute)}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("gRPC checkout: %v; want FAILED_PRECONDITION", err)
	}
	if n := admin.DBSize(context.Background()).Val(); n > 2 {
		t.Errorf("Redis holds %d keys after the refused checkouts; want only the store's identity", n)
	}
	_, metrics := get(t, s, "/metrics")
	for _, want := range []string{`orderexpiry_durability_mode{mode="strict"} 1`, "orderexpiry_redis_durability_unsafe 1"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics has no %q", want)
		}
	}

	for _, kv := range [][2]string{{"appendonly", "yes"}, {"appendfsync", "always"}} {
		if err := admin.ConfigSet(context.Background(), kv[0], kv[1]).Err(); err != nil {
			t.Fatal(err)
		}
	}
	fixed := time.Now()
	waitUntil(t, 10*time.Second, "/healthz SERVING", func() bool {
		code, b := get(t, s, "/healthz")
		body = b
		return code == http.StatusOK
	})
	if !strings.Contains(body, `"durability":"strict"`) {
		t.Errorf("/healthz: %s; want the durability strict", body)
	}
	if code, out := s.restCall(t, http.MethodPost, "/v1/orders", `{"order_id":"d-1","ttl":"60s"}`); code != http.StatusOK {
		t.Errorf("checkout once Redis fsyncs every write: %d %v", code, out)
	}
	result(t, "serving_again_after=%s", time.Since(fixed).Round(time.Millisecond))
}

// TestStrictFailoverKeepsConfirmed is the black-box case of a failover that
// takes back acknowledged writes. A master with two replicas under three
// sentinels; 20 checkouts; both replicas stalled (SIGSTOP) and 20 MB of
// other writes queued to them, so that what comes next stays in the
// master's output buffers; 12 checkouts; the master SIGKILLed and the
// replicas resumed; one failover. With -durability=strict every checkout
// answered OK is on the new master, and those made during the stall are
// refused with UNAVAILABLE. With -durability=fast the same run loses the
// checkouts it confirmed during the stall: the subtest asserts that it
// loses some, which shows the stall opens the window strict closes.
func TestStrictFailoverKeepsConfirmed(t *testing.T) {
	faultTest(t)
	durabilityModes(t, stalledFailover)
}

func stalledFailover(t *testing.T, mode string) {
	sn := redistest.StartSentinel(t, 2, 3)
	env := map[string]string{
		"REDIS_SENTINEL_ADDRS":  sn.Addrs(),
		"REDIS_SENTINEL_MASTER": redistest.SentinelMaster,
		"DURABILITY":            mode,
	}
	s := startServer(t, env)
	if _, body := get(t, s, "/healthz"); !strings.Contains(body, `"durability":"`+mode+`"`) {
		t.Errorf("/healthz: %s; want the durability %s", body, mode)
	}
	ctx := context.Background()
	checkout := func(id string) (codes.Code, string, time.Duration) {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		start := time.Now()
		_, err := s.Client.Checkout(cctx, &pb.CheckoutRequest{OrderId: id, Ttl: ttl(time.Hour)})
		return status.Code(err), status.Convert(err).Message(), time.Since(start)
	}
	var confirmed []string
	for i := range 20 {
		id := fmt.Sprintf("before-%d", i)
		if code, msg, _ := checkout(id); code != codes.OK {
			t.Fatalf("checkout %s before the stall: %v %s", id, code, msg)
		}
		confirmed = append(confirmed, id)
	}

	old := sn.Master(t)
	var replicas []*redistest.Server
	for _, n := range sn.Nodes {
		if n != old {
			replicas = append(replicas, n)
		}
	}
	resume := func() {
		for _, r := range replicas {
			_ = syscall.Kill(r.PID(), syscall.SIGCONT)
		}
	}
	t.Cleanup(resume)
	for _, r := range replicas {
		if err := syscall.Kill(r.PID(), syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
	}
	// 20 MB for the stalled replicas: more than loopback sockets buffer,
	// so that the checkouts below stay in the master's memory.
	admin := old.Client(t)
	filler := strings.Repeat("x", 1<<20)
	for i := range 20 {
		if err := admin.Set(ctx, fmt.Sprintf("filler-%d", i), filler, 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	var refused, confirmedDuring int
	var refusedIn time.Duration
	for i := range 12 {
		id := fmt.Sprintf("stalled-%d", i)
		code, msg, took := checkout(id)
		switch code {
		case codes.OK:
			confirmedDuring++
			confirmed = append(confirmed, id)
		case codes.Unavailable:
			refused++
			refusedIn = max(refusedIn, took)
			if mode == "strict" && (!strings.Contains(msg, "outcome is unknown") || !strings.Contains(msg, "repeating the call is safe")) {
				t.Errorf("checkout %s refused with %q; want it to say the outcome is unknown and repeating is safe", id, msg)
			}
		default:
			t.Errorf("checkout %s during the stall: %v %s; want OK or UNAVAILABLE", id, code, msg)
		}
	}

	old.Kill()
	killed := time.Now()
	resume()
	sn.WaitFailover(t, old)
	failedOver := time.Since(killed)

	// Every confirmed checkout is pending on the new master.
	lost := 0
	for _, id := range confirmed {
		if confirmedLost(ctx, t, s, id, mode == "strict", "after the failover") {
			lost++
		}
	}
	result(t, "mode=%s confirmed_before_stall=20 during_stall: confirmed=%d refused=%d (each within %s) lost=%d failover=%s",
		mode, confirmedDuring, refused, refusedIn.Round(time.Millisecond), lost, failedOver.Round(time.Millisecond))
	switch mode {
	case "strict":
		if confirmedDuring+refused != 12 || refused == 0 {
			t.Errorf("during the stall %d checkouts were confirmed and %d refused; want all 12 answered, some refused", confirmedDuring, refused)
		}
	case "fast":
		// The fault must bite: the fast mode confirms during the stall
		// and loses what it confirmed.
		if confirmedDuring == 0 || lost == 0 {
			t.Errorf("fast mode: %d confirmed during the stall, %d lost; want some of each, or this test proves nothing of strict", confirmedDuring, lost)
		}
	}
}

// get reads path from s's HTTP port: the status and the body.
func get(t *testing.T, s *server, path string) (int, string) {
	t.Helper()
	req, err := s.newRequest(context.Background(), http.MethodGet, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := s.HTTP.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestStrictRedisCrash: with -durability=strict on one Redis (appendonly
// yes, appendfsync always), Redis SIGKILLed in the middle of checkouts from
// 4 goroutines and restarted from its AOF loses no checkout answered OK,
// and the service serves again. A killed process loses nothing the kernel
// had, whatever appendfsync says: this run passes in the fast mode with
// appendfsync no too, so it shows the service through a Redis restart,
// not what strict adds (fsync at every write), which only a machine crash
// would test.
func TestStrictRedisCrash(t *testing.T) {
	faultTest(t)
	r := redistest.Start(t, "--appendonly", "yes", "--appendfsync", "always")
	s := startServer(t, map[string]string{"REDIS_URL": r.URL(), "DURABILITY": "strict"})
	ctx := context.Background()
	stop := checkoutLoad(ctx, s, "rc", 3*time.Second, 0)
	time.Sleep(1500 * time.Millisecond)
	killedAt := time.Now()
	r.Restart(t) // SIGKILL, then a new process on the same AOF
	restarted := time.Since(killedAt)
	time.Sleep(2 * time.Second)
	var ok []string
	var before, refused, lost int
	for _, c := range stop() {
		switch c.code {
		case codes.OK:
			ok = append(ok, c.id)
			if c.end.Before(killedAt) {
				before++
			}
			if confirmedLost(ctx, t, s, c.id, true, "after Redis restarted") {
				lost++
			}
		case codes.Unavailable, codes.DeadlineExceeded:
			refused++
		default:
			t.Errorf("checkout %s: %v %s", c.id, c.code, c.message)
		}
	}
	result(t, "confirmed=%d (before the kill %d) refused=%d lost=%d restarted_in=%s", len(ok), before, refused, lost, restarted.Round(time.Millisecond))
	if before < 50 || len(ok) <= before {
		t.Errorf("%d checkouts confirmed before the kill and %d in all: the load did not run on both sides of the crash", before, len(ok))
	}
}
