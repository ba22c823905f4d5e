package client_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/orderexpiry/orderexpiry/client"
	"github.com/orderexpiry/orderexpiry/internal/redistest"
	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// groupWith creates the group id with ackDeadline, checks out the orders
// ids with a short TTL and waits until they are all in the group's
// backlog, ready to be delivered together.
func groupWith(t *testing.T, c *client.Client, id string, ackDeadline time.Duration, ids ...string) {
	t.Helper()
	ctx := context.Background()
	if _, err := c.CreateConsumerGroup(ctx, &pb.CreateConsumerGroupRequest{GroupId: id, AckDeadline: durationpb.New(ackDeadline)}); err != nil {
		t.Fatal(err)
	}
	checkout(t, c, 50*time.Millisecond, ids...)
	waitGroup(t, c, id, "a backlog of them all", func(g *pb.ConsumerGroup) bool { return g.GetBacklog() == int64(len(ids)) })
}

// waitGroup waits up to 10 s until ok holds of the group's state.
func waitGroup(t *testing.T, c *client.Client, id, what string, ok func(*pb.ConsumerGroup) bool) *pb.ConsumerGroup {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		g, err := c.GetConsumerGroup(context.Background(), &pb.GetConsumerGroupRequest{GroupId: id})
		if err != nil {
			t.Fatal(err)
		}
		if ok(g) {
			return g
		}
		if time.Now().After(deadline) {
			t.Fatalf("group %s: want %s within 10 s; it has backlog %d, in flight %d, dead letters %d", id, what, g.GetBacklog(), g.GetInFlight(), g.GetDeadLetters())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// consuming runs c.Consume in the background until the test ends, and
// returns a channel of what it returned.
func consuming(t *testing.T, c *client.Client, group string, opts client.ConsumeOptions, handle func(context.Context, *pb.ExpirationEvent) error) (context.CancelFunc, <-chan error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done, returned := make(chan error, 1), make(chan struct{})
	go func() {
		defer close(returned)
		done <- c.Consume(ctx, group, opts, handle)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-returned:
		case <-time.After(10 * time.Second):
			t.Error("Consume did not return within 10 s of its context's end")
		}
	})
	return cancel, done
}

// gauge counts the handlers running, and the most that ran at once.
type gauge struct {
	mu            sync.Mutex
	running, most int
}

func (g *gauge) enter() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.running++
	g.most = max(g.most, g.running)
}

func (g *gauge) leave() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.running--
}

func (g *gauge) get() (running, most int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.running, g.most
}

// TestConsumeConcurrency: with Concurrency 3 and more ready than that, three
// handlers run at once, never more; and the service holds only three
// deliveries in flight for the consumer (MaxInFlight defaults to
// Concurrency) or as many as MaxInFlight says, the rest staying in the
// group's backlog, for other consumers. Every expiration is handled once.
func TestConsumeConcurrency(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)
	c := dial(t, s.GRPCAddr, client.Options{Insecure: true})
	for _, tc := range []struct {
		name        string
		maxInFlight int
		inFlight    int64
	}{
		{"default", 0, 3},
		{"prefetch", 5, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			group := "conc-" + tc.name
			want := ids(group+"-", 1, 10)
			groupWith(t, c, group, 30*time.Second, want...)

			var g gauge
			var handled seen
			release := make(chan struct{})
			consuming(t, c, group, client.ConsumeOptions{Concurrency: 3, MaxInFlight: tc.maxInFlight}, func(ctx context.Context, ev *pb.ExpirationEvent) error {
				g.enter()
				defer g.leave()
				select {
				case <-release:
				case <-ctx.Done():
					return ctx.Err()
				}
				handled.add(ev.GetOrderId())
				return nil
			})
			for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
				if running, _ := g.get(); running == 3 {
					break
				}
				if time.Now().After(deadline) {
					running, _ := g.get()
					t.Fatalf("%d handlers ran at once within 10 s, want 3", running)
				}
			}
			// The service sends no more than MaxInFlight while they run.
			st := waitGroup(t, c, group, "deliveries in flight", func(g *pb.ConsumerGroup) bool { return g.GetInFlight() >= tc.inFlight })
			time.Sleep(300 * time.Millisecond)
			st2 := waitGroup(t, c, group, "its state", func(*pb.ConsumerGroup) bool { return true })
			for _, st := range []*pb.ConsumerGroup{st, st2} {
				if st.GetInFlight() != tc.inFlight || st.GetBacklog() != int64(len(want))-tc.inFlight {
					t.Errorf("with 3 handlers running, the group has %d in flight and a backlog of %d, want %d and %d",
						st.GetInFlight(), st.GetBacklog(), tc.inFlight, int64(len(want))-tc.inFlight)
				}
			}
			close(release)
			handled.waitFor(t, len(want))
			time.Sleep(200 * time.Millisecond)
			once(t, handled.get(), want)
			if _, most := g.get(); most != 3 {
				t.Errorf("at most %d handlers ran at once, want 3", most)
			}
			waitGroup(t, c, group, "nothing left", func(g *pb.ConsumerGroup) bool { return g.GetBacklog() == 0 && g.GetInFlight() == 0 })
		})
	}
}

// TestConsumeAckDeadline: a handler that outlasts its group's ack deadline
// sees its context end with context.DeadlineExceeded near the deadline, and
// the expiration is delivered again, as the context told.
func TestConsumeAckDeadline(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)
	c := dial(t, s.GRPCAddr, client.Options{Insecure: true})
	const ackDeadline = 400 * time.Millisecond
	groupWith(t, c, "slow", ackDeadline, "slow-1")

	type outcome struct {
		waited time.Duration
		err    error
	}
	outcomes := make(chan outcome, 10)
	consuming(t, c, "slow", client.ConsumeOptions{}, func(ctx context.Context, ev *pb.ExpirationEvent) error {
		start := time.Now()
		select {
		case <-ctx.Done():
			outcomes <- outcome{time.Since(start), ctx.Err()}
			return ctx.Err()
		case <-time.After(5 * time.Second):
			outcomes <- outcome{time.Since(start), nil}
			return nil
		}
	})
	for attempt := 1; attempt <= 2; attempt++ {
		select {
		case o := <-outcomes:
			if !errors.Is(o.err, context.DeadlineExceeded) {
				t.Fatalf("delivery %d: the handler's context did not end within 5 s (%v), want it ended at the ack deadline, %s", attempt, o.err, ackDeadline)
			}
			// The deadline counts from the delivery's arrival, just before
			// the handler starts.
			if o.waited > ackDeadline+500*time.Millisecond || o.waited < ackDeadline-100*time.Millisecond {
				t.Errorf("delivery %d: the handler's context ended after %s, want about %s", attempt, o.waited, ackDeadline)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("delivery %d did not come within 10 s", attempt)
		}
	}
}

// TestConsumeStop: once Consume's context ends, the handlers' contexts end
// too; Consume waits for them, acknowledges what they handled before it
// closes the stream (nothing is delivered again), and returns
// context.Canceled.
func TestConsumeStop(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)
	c := dial(t, s.GRPCAddr, client.Options{Insecure: true})
	want := ids("stop-", 1, 2)
	groupWith(t, c, "stopping", 30*time.Second, want...)

	var started, finished seen
	stop, done := consuming(t, c, "stopping", client.ConsumeOptions{Concurrency: 2}, func(ctx context.Context, ev *pb.ExpirationEvent) error {
		started.add(ev.GetOrderId())
		<-ctx.Done()
		if !errors.Is(ctx.Err(), context.Canceled) {
			t.Errorf("the handler's context ended with %v, want context.Canceled", ctx.Err())
		}
		// The work is done even so, a moment later.
		time.Sleep(200 * time.Millisecond)
		finished.add(ev.GetOrderId())
		return nil
	})
	started.waitFor(t, 2)
	stop()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Consume returned %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Consume did not return within 5 s of its context's end")
	}
	once(t, finished.get(), want)
	// Acknowledged, not handed back by the stream's end.
	st := waitGroup(t, c, "stopping", "its state", func(*pb.ConsumerGroup) bool { return true })
	if st.GetBacklog() != 0 || st.GetInFlight() != 0 {
		t.Errorf("after the stop, the group has a backlog of %d and %d in flight, want none: the expirations handled were not acknowledged", st.GetBacklog(), st.GetInFlight())
	}
}

// TestConsumeNackDelay: an expiration whose handler failed is delivered
// again no earlier than NackDelay after the failure, and not much later.
func TestConsumeNackDelay(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)
	c := dial(t, s.GRPCAddr, client.Options{Insecure: true})
	groupWith(t, c, "later", 5*time.Second, "later-1")

	const delay = 700 * time.Millisecond
	var mu sync.Mutex
	var times []time.Time
	consuming(t, c, "later", client.ConsumeOptions{NackDelay: delay}, func(context.Context, *pb.ExpirationEvent) error {
		mu.Lock()
		defer mu.Unlock()
		times = append(times, time.Now())
		if len(times) == 1 {
			return errors.New("not yet")
		}
		return nil
	})
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		mu.Lock()
		n := len(times)
		mu.Unlock()
		if n == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d deliveries within 10 s, want 2", n)
		}
	}
	// The redelivery is due delay after the nack, which the service
	// received after the handler returned; the consumer looks for due ones
	// every second (a quarter of the ack deadline, at most 1s).
	if gap := times[1].Sub(times[0]); gap < delay || gap > delay+2*time.Second {
		t.Errorf("the second delivery came %s after the first failed, want from %s to %s", gap, delay, delay+2*time.Second)
	}
}

// TestConsumeOptionsRefused: options that cannot work are refused at once,
// saying which and why.
func TestConsumeOptionsRefused(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)
	logs := &redistest.LockedBuffer{}
	c := dial(t, s.GRPCAddr, client.Options{Insecure: true, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if _, err := c.CreateConsumerGroup(context.Background(), &pb.CreateConsumerGroupRequest{GroupId: "opts", AckDeadline: durationpb.New(time.Second)}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		opts    client.ConsumeOptions
		mention string
	}{
		{"negative concurrency", client.ConsumeOptions{Concurrency: -1}, "Concurrency -1"},
		{"negative max in flight", client.ConsumeOptions{MaxInFlight: -1}, "MaxInFlight -1"},
		{"fewer in flight than handlers", client.ConsumeOptions{Concurrency: 4, MaxInFlight: 2}, "less than Concurrency 4"},
		{"negative nack delay", client.ConsumeOptions{NackDelay: -time.Second}, "NackDelay -1s"},
		{"nack delay past the ack deadline", client.ConsumeOptions{NackDelay: 2 * time.Second}, `NackDelay 2s is longer than the ack deadline of group "opts" (1s)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			err := c.Consume(ctx, "opts", tc.opts, func(context.Context, *pb.ExpirationEvent) error { return nil })
			if err == nil || ctx.Err() != nil || !strings.Contains(err.Error(), tc.mention) {
				t.Errorf("Consume with %+v returned %v, want at once an error saying %q", tc.opts, err, tc.mention)
			}
		})
	}
	if strings.Contains(logs.String(), "opening it again") {
		t.Errorf("the client retried options it cannot use:\n%s", logs)
	}
}
