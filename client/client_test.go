package client_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/orderexpiry/orderexpiry/client"
	"github.com/orderexpiry/orderexpiry/internal/redistest"
	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// fast reconnects within a fraction of a second, for the tests.
var fast = backoff.Config{BaseDelay: 20 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 200 * time.Millisecond}

func dial(t *testing.T, addr string, opts client.Options) *client.Client {
	t.Helper()
	if opts.Backoff == (backoff.Config{}) {
		opts.Backoff = fast
	}
	c, err := client.Dial(addr, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func checkout(t *testing.T, c *client.Client, ttl time.Duration, ids ...string) {
	t.Helper()
	for _, id := range ids {
		// Right after a server's restart, the connection may not be up yet.
		if _, err := c.Checkout(context.Background(), &pb.CheckoutRequest{OrderId: id, Ttl: durationpb.New(ttl)}, grpc.WaitForReady(true)); err != nil {
			t.Fatalf("checkout %s: %v", id, err)
		}
	}
}

// seen gathers the order ids a handler is given, from any goroutine.
type seen struct {
	mu  sync.Mutex
	ids []string
}

func (s *seen) add(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ids = append(s.ids, id)
}

func (s *seen) get() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.ids)
}

// waitFor waits up to 15 s until s holds n ids.
func (s *seen) waitFor(t *testing.T, n int) []string {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for len(s.get()) < n {
		if time.Now().After(deadline) {
			t.Fatalf("handled %d of %d expirations within 15 s: %v", len(s.get()), n, s.get())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return s.get()
}

// once fails unless ids holds each of want exactly once, and nothing else.
func once(t *testing.T, ids, want []string) {
	t.Helper()
	got := slices.Sorted(slices.Values(ids))
	want = slices.Sorted(slices.Values(want))
	if !slices.Equal(got, want) {
		t.Fatalf("handled %v, want each of %v once", got, want)
	}
}

func ids(prefix string, from, to int) []string {
	var out []string
	for i := from; i <= to; i++ {
		out = append(out, fmt.Sprint(prefix, i))
	}
	return out
}

// TestWatchResumes: a watch on a server that stops, while orders come due,
// and starts again on the same Redis and address, goes on after the last
// event it handled: every expiration is handled once, none lost, none
// twice.
func TestWatchResumes(t *testing.T) {
	t.Parallel()
	r := redistest.Start(t)
	env := map[string]string{"REDIS_URL": r.URL()}
	a := startServer(t, env)
	logs := &redistest.LockedBuffer{}
	c := dial(t, a.GRPCAddr, client.Options{Insecure: true, Logger: slog.New(slog.NewTextHandler(logs, nil))})

	var got seen
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- c.Watch(ctx, "0-0", func(ev *pb.ExpirationEvent) error {
			got.add(ev.GetOrderId())
			return nil
		})
	}()
	checkout(t, c, 200*time.Millisecond, ids("w-", 1, 3)...)
	got.waitFor(t, 3)

	// These come due while no server runs: the next one claims them when
	// it starts.
	checkout(t, c, time.Second, ids("w-", 4, 6)...)
	a.Stop(t)
	time.Sleep(1200 * time.Millisecond)
	startServer(t, env, "-grpc-addr", a.GRPCAddr)
	checkout(t, c, 200*time.Millisecond, ids("w-", 7, 9)...)
	got.waitFor(t, 9)
	// Nothing more comes: no event is handed twice.
	time.Sleep(300 * time.Millisecond)
	once(t, got.get(), ids("w-", 1, 9))
	if !strings.Contains(logs.String(), "opening it again") {
		t.Errorf("the client logged no reconnection:\n%s", logs)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Watch returned %v once its context ended, want context.Canceled", err)
	}
}

// TestWatchBacksOff: a server whose Redis is gone refuses each watch at
// once; the client asks again less and less often rather than at its first
// wait each time.
func TestWatchBacksOff(t *testing.T) {
	t.Parallel()
	r := redistest.Start(t)
	s := startServer(t, map[string]string{"REDIS_URL": r.URL()})
	logs := &redistest.LockedBuffer{}
	c := dial(t, s.GRPCAddr, client.Options{
		Insecure: true,
		Backoff:  backoff.Config{BaseDelay: 10 * time.Millisecond, Multiplier: 2, MaxDelay: time.Second},
		Logger:   slog.New(slog.NewTextHandler(logs, nil)),
	})
	r.Kill()
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	err := c.Watch(ctx, "", func(*pb.ExpirationEvent) error { return nil })
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Watch returned %v, want the context's deadline", err)
	}
	// 10, 20, 40, … 640 ms: 8 attempts in 1.5 s; at 10 ms each, 100 or so.
	if n := strings.Count(logs.String(), "opening it again"); n < 3 || n > 12 {
		t.Errorf("the watch was opened again %d times in 1.5 s, want 3 to 12:\n%s", n, logs)
	}
}

// TestWatchReturns: Watch returns its handler's error as it is, and the
// error of a request that asking again would not mend, at once.
func TestWatchReturns(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)
	c := dial(t, s.GRPCAddr, client.Options{Insecure: true})
	checkout(t, c, 50*time.Millisecond, "r-1", "r-2")

	stop := errors.New("stop here")
	var got seen
	err := c.Watch(context.Background(), "0-0", func(ev *pb.ExpirationEvent) error {
		got.add(ev.GetOrderId())
		return stop
	})
	if err != stop {
		t.Errorf("Watch returned %v, want the handler's error", err)
	}
	if len(got.get()) != 1 {
		t.Errorf("the handler was called for %v after it failed", got.get())
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err = c.Watch(ctx, "not-a-cursor", func(*pb.ExpirationEvent) error { return nil })
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("Watch after a malformed cursor returned %v, want INVALID_ARGUMENT", err)
	}
}

// TestConsume: Consume acknowledges what its handler handled, hands back
// what it failed, which the group delivers again: every expiration is
// handled once, and the group is left with nothing in flight.
func TestConsume(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)
	c := dial(t, s.GRPCAddr, client.Options{Insecure: true})
	ctx := context.Background()
	if _, err := c.CreateConsumerGroup(ctx, &pb.CreateConsumerGroupRequest{GroupId: "billing"}); err != nil {
		t.Fatal(err)
	}
	want := ids("c-", 1, 5)
	checkout(t, c, 100*time.Millisecond, want...)

	var handled, failed seen
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- c.Consume(cctx, "billing", client.ConsumeOptions{Consumer: "worker-1"}, func(_ context.Context, ev *pb.ExpirationEvent) error {
			// The first delivery of each order fails.
			if !slices.Contains(failed.get(), ev.GetOrderId()) {
				failed.add(ev.GetOrderId())
				return errors.New("not now")
			}
			handled.add(ev.GetOrderId())
			return nil
		})
	}()
	handled.waitFor(t, len(want))
	time.Sleep(300 * time.Millisecond)
	once(t, handled.get(), want)
	once(t, failed.get(), want)
	// The last acknowledgement may still be on its way.
	deadline := time.Now().Add(5 * time.Second)
	for {
		g, err := c.GetConsumerGroup(ctx, &pb.GetConsumerGroupRequest{GroupId: "billing"})
		if err != nil {
			t.Fatal(err)
		}
		if g.GetBacklog() == 0 && g.GetInFlight() == 0 && g.GetDeadLetters() == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the group holds backlog %d, in flight %d, dead letters %d; want none", g.GetBacklog(), g.GetInFlight(), g.GetDeadLetters())
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Consume returned %v once its context ended, want context.Canceled", err)
	}

	err := c.Consume(ctx, "no-such-group", client.ConsumeOptions{}, func(context.Context, *pb.ExpirationEvent) error { return nil })
	if status.Code(err) != codes.NotFound {
		t.Errorf("Consume of an unknown group returned %v, want NOT_FOUND", err)
	}
}

// TestDialTLSAndToken: over TLS with a private CA and a bearer token, the
// client's calls and streams pass; a wrong token is refused at once rather
// than retried, and a server whose CA the client does not trust fails the
// handshake.
func TestDialTLSAndToken(t *testing.T) {
	t.Parallel()
	cert, key := selfSigned(t)
	s := startServer(t, map[string]string{"AUTH_TOKENS": "s3cret"}, "-tls-cert", cert, "-tls-key", key)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	good := dial(t, s.GRPCAddr, client.Options{CAFile: cert, Token: "s3cret"})
	checkout(t, good, 50*time.Millisecond, "t-1")
	var got seen
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	go func() {
		_ = good.Watch(wctx, "0-0", func(ev *pb.ExpirationEvent) error {
			got.add(ev.GetOrderId())
			return nil
		})
	}()
	once(t, got.waitFor(t, 1), []string{"t-1"})

	wrong := dial(t, s.GRPCAddr, client.Options{CAFile: cert, Token: "wrong"})
	if err := wrong.Watch(ctx, "", func(*pb.ExpirationEvent) error { return nil }); status.Code(err) != codes.Unauthenticated {
		t.Errorf("Watch with a wrong token returned %v, want UNAUTHENTICATED", err)
	}

	untrusted := dial(t, s.GRPCAddr, client.Options{Token: "s3cret"})
	short, scancel := context.WithTimeout(ctx, 2*time.Second)
	defer scancel()
	if _, err := untrusted.GetOrder(short, &pb.GetOrderRequest{OrderId: "t-1"}); status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("a call trusting the system's CAs only returned %v, want UNAVAILABLE for the certificate", err)
	}
	// A watch does not retry a handshake that the certificate fails: it
	// returns at once, naming the certificate.
	wshort, wcancel := context.WithTimeout(ctx, 5*time.Second)
	defer wcancel()
	if err := untrusted.Watch(wshort, "", func(*pb.ExpirationEvent) error { return nil }); status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("Watch trusting the system's CAs only returned %v, want UNAVAILABLE for the certificate before its context ended", err)
	}

	if _, err := client.Dial(s.GRPCAddr, client.Options{CAFile: "/no/such/file"}); err == nil || !strings.Contains(err.Error(), "CA file") {
		t.Errorf("Dial with a missing CA file returned %v, want an error about it", err)
	}
	if _, err := client.Dial(s.GRPCAddr, client.Options{CAFile: cert, Token: "Bearer s3cret"}); err == nil || !strings.Contains(err.Error(), "white space") {
		t.Errorf("Dial with a token of two words returned %v, want an error about it", err)
	}
}

// TestConsumeNackReason: an expiration whose handler fails hands it back
// with the error's text, cleaned to one line, which its dead letter shows.
func TestConsumeNackReason(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)
	c := dial(t, s.GRPCAddr, client.Options{Insecure: true})
	ctx := context.Background()
	if _, err := c.CreateConsumerGroup(ctx, &pb.CreateConsumerGroupRequest{GroupId: "g", MaxDeliveries: 1}); err != nil {
		t.Fatal(err)
	}
	checkout(t, c, 100*time.Millisecond, "r-1")
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		_ = c.Consume(cctx, "g", client.ConsumeOptions{}, func(context.Context, *pb.ExpirationEvent) error {
			return errors.New("payment API answered 502\nretry later")
		})
	}()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		resp, err := c.ListDeadLetters(ctx, &pb.ListDeadLettersRequest{GroupId: "g"})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.GetDeadLetters()) == 1 {
			if got, want := resp.GetDeadLetters()[0].GetLastFailure(), "payment API answered 502 retry later"; got != want {
				t.Errorf("dead letter says %q, want %q", got, want)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no dead letter after 10s")
		}
	}
}
