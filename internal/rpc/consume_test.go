package rpc

// These tests call the consumer groups' handlers directly, on the memory
// store, with the consume poll set beyond the tests' end: what a stream
// delivers, it was woken for (an append, an ack, a nack, a redrive).

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/orderexpiry/orderexpiry/internal/memstore"
	"github.com/orderexpiry/orderexpiry/internal/order"
	"github.com/orderexpiry/orderexpiry/internal/push"
	"github.com/orderexpiry/orderexpiry/internal/storetest"
	"github.com/orderexpiry/orderexpiry/internal/watch"
	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// wait bounds how long a test waits for what it expects: a wake that
// works answers within milliseconds, one that is missing never does.
const wait = 10 * time.Second

// lookingStore is the memory store that says when a consumer looked for
// deliveries.
type lookingStore struct {
	*memstore.Store
	looked chan struct{}
}

func (s lookingStore) Deliver(ctx context.Context, group, consumer string, n int) ([]order.Delivery, error) {
	defer func() {
		select {
		case s.looked <- struct{}{}:
		default:
		}
	}()
	return s.Store.Deliver(ctx, group, consumer, n)
}

type fixture struct {
	t     *testing.T
	st    lookingStore
	svc   *Service
	group string
}

// code is the gRPC code a client gets for err, which a handler called
// directly returns before the error interceptor translates it.
func (f *fixture) code(err error) codes.Code {
	return f.svc.statusOf(f.t.Context(), err).Code()
}

// newFixture starts a memory store, its hub, and the service over them
// with limits, and creates a group with a one-minute ack deadline and
// maxDeliveries.
func newFixture(t *testing.T, limits GroupLimits, maxDeliveries int32) *fixture {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	st := lookingStore{Store: memstore.New(memstore.Options{Retention: time.Hour}), looked: make(chan struct{}, 1)}
	storetest.RunStore(t, st.Store)
	hub := watch.NewHub(st.Store, watch.Options{Logger: log})
	storetest.RunStore(t, hub)
	svc := New(st, hub, Options{Limits: order.DefaultLimits, Logger: log, Groups: limits,
		Push: push.Policy{AllowHosts: []string{"127.0.0.1"}, AllowPrivate: true, AllowHTTP: true}})
	svc.consumePoll = time.Hour
	f := &fixture{t: t, st: st, svc: svc, group: "g"}
	if _, err := svc.CreateConsumerGroup(t.Context(), &pb.CreateConsumerGroupRequest{GroupId: f.group,
		AckDeadline: durationpb.New(time.Minute), MaxDeliveries: maxDeliveries}); err != nil {
		t.Fatal(err)
	}
	// Events appended before the hub knows the log's end would reach the
	// streams only by the poll.
	deadline := time.Now().Add(wait)
	for pos, _ := hub.Appended(); pos == nil; pos, _ = hub.Appended() {
		if time.Now().After(deadline) {
			t.Fatalf("the hub has no position after %s", wait)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return f
}

// expire checks out orders due at once, through the handler.
func (f *fixture) expire(ids ...string) {
	f.t.Helper()
	for _, id := range ids {
		if _, err := f.svc.Checkout(f.t.Context(), &pb.CheckoutRequest{OrderId: id, Ttl: durationpb.New(time.Millisecond)}); err != nil {
			f.t.Fatal(err)
		}
	}
}

// stream is a ConsumeExpirations stream served by a direct call of the
// handler.
type stream struct {
	grpc.ServerStream
	ctx    context.Context
	cancel context.CancelFunc
	header chan struct{}
	got    chan *pb.ReceivedExpiration
	done   chan error
	once   sync.Once
	err    error
}

func (s *stream) Context() context.Context { return s.ctx }

func (s *stream) SendHeader(metadata.MD) error {
	close(s.header)
	return nil
}

func (s *stream) Send(m *pb.ReceivedExpiration) error {
	s.got <- m
	return nil
}

// consume opens a stream and waits until it has sent its header and looked
// once for deliveries: what it gets after, it was woken for.
func (f *fixture) consume(req *pb.ConsumeExpirationsRequest) *stream {
	f.t.Helper()
	ctx, cancel := context.WithCancel(f.t.Context())
	s := &stream{ctx: ctx, cancel: cancel, header: make(chan struct{}), got: make(chan *pb.ReceivedExpiration, 100), done: make(chan error, 1)}
	select {
	case <-f.st.looked:
	default:
	}
	go func() { s.done <- f.svc.ConsumeExpirations(req, s) }()
	f.t.Cleanup(func() {
		cancel()
		s.end(f.t)
	})
	select {
	case <-s.header:
	case err := <-s.done:
		f.t.Fatalf("the stream ended before its header: %v", err)
	case <-time.After(wait):
		f.t.Fatalf("no header within %s", wait)
	}
	select {
	case <-f.st.looked:
	case <-time.After(wait):
		f.t.Fatalf("the stream did not look for deliveries within %s", wait)
	}
	return s
}

// end waits for the handler's return.
func (s *stream) end(t *testing.T) error {
	t.Helper()
	s.once.Do(func() {
		select {
		case s.err = <-s.done:
		case <-time.After(wait):
			t.Fatalf("the stream did not end within %s", wait)
		}
	})
	return s.err
}

// next returns the next delivery, failing the test after wait.
func (s *stream) next(t *testing.T) *pb.ReceivedExpiration {
	t.Helper()
	select {
	case m := <-s.got:
		return m
	case err := <-s.done:
		s.done <- err
		t.Fatalf("the stream ended: %v", err)
	case <-time.After(wait):
		t.Fatalf("no delivery within %s", wait)
	}
	return nil
}

// none checks that nothing more is delivered for a while.
func (s *stream) none(t *testing.T) {
	t.Helper()
	select {
	case m := <-s.got:
		t.Fatalf("delivered %s, want nothing more", m.GetEvent().GetOrderId())
	case <-time.After(100 * time.Millisecond):
	}
}

// TestConsumeWakesOnAppend: an event appended goes down the streams at
// once, not at the next poll.
func TestConsumeWakesOnAppend(t *testing.T) {
	f := newFixture(t, GroupLimits{}, 0)
	s := f.consume(&pb.ConsumeExpirationsRequest{GroupId: f.group, Consumer: "c"})
	s.none(t)
	for _, id := range []string{"a", "b"} {
		f.expire(id)
		if m := s.next(t); m.GetEvent().GetOrderId() != id || m.GetDeliveryAttempt() != 1 || m.GetAckId() == "" || m.GetEvent().GetCursor() != "" {
			t.Fatalf("delivered %v, want %s, attempt 1, with an ack id and no cursor", m, id)
		}
	}
}

// TestConsumeAckFreesSlot: a stream at its max_in_flight takes nothing
// more until an ack on this replica frees a slot, and then at once.
func TestConsumeAckFreesSlot(t *testing.T) {
	f := newFixture(t, GroupLimits{}, 0)
	s := f.consume(&pb.ConsumeExpirationsRequest{GroupId: f.group, Consumer: "c", MaxInFlight: 2})
	f.expire("a", "b", "c")
	first := []*pb.ReceivedExpiration{s.next(t), s.next(t)}
	s.none(t)
	resp, err := f.svc.AcknowledgeExpirations(t.Context(), &pb.AcknowledgeExpirationsRequest{GroupId: f.group, AckIds: []string{first[0].GetAckId(), "not-an-ack-id"}})
	if err != nil {
		t.Fatal(err)
	}
	if r := resp.GetResults(); len(r) != 2 || r[0].GetStatus() != pb.AckIdStatus_ACK_ID_STATUS_OK || r[1].GetStatus() != pb.AckIdStatus_ACK_ID_STATUS_UNKNOWN {
		t.Fatalf("ack results %v, want OK then UNKNOWN", r)
	}
	third := s.next(t)
	seen := map[string]bool{}
	for _, m := range append(first, third) {
		seen[m.GetEvent().GetOrderId()] = true
	}
	if len(seen) != 3 {
		t.Fatalf("delivered %v, want a, b and c once each", seen)
	}
	s.none(t)
}

// TestConsumeAckDeadlineFreesSlot: a delivery whose ack deadline passed
// is the group's again: the stream no longer counts it, and takes its
// redelivery (the poll finds it).
func TestConsumeAckDeadlineFreesSlot(t *testing.T) {
	f := newFixture(t, GroupLimits{}, 0)
	if _, err := f.svc.CreateConsumerGroup(t.Context(), &pb.CreateConsumerGroupRequest{GroupId: "short", AckDeadline: durationpb.New(100 * time.Millisecond)}); err != nil {
		t.Fatal(err)
	}
	f.svc.consumePoll = 20 * time.Millisecond
	s := f.consume(&pb.ConsumeExpirationsRequest{GroupId: "short", Consumer: "c", MaxInFlight: 1})
	f.expire("a")
	if m := s.next(t); m.GetDeliveryAttempt() != 1 {
		t.Fatalf("delivered %v, want attempt 1", m)
	}
	if m := s.next(t); m.GetEvent().GetOrderId() != "a" || m.GetDeliveryAttempt() != 2 {
		t.Fatalf("delivered %v, want a again, attempt 2", m)
	}
}

// TestConsumeNackRedelivers: a nack without retry_after on this replica
// has the event delivered again at once, as its next attempt.
func TestConsumeNackRedelivers(t *testing.T) {
	f := newFixture(t, GroupLimits{}, 0)
	s := f.consume(&pb.ConsumeExpirationsRequest{GroupId: f.group, Consumer: "c"})
	f.expire("a")
	m := s.next(t)
	if _, err := f.svc.NackExpirations(t.Context(), &pb.NackExpirationsRequest{GroupId: f.group, AckIds: []string{m.GetAckId()}, Reason: "try again"}); err != nil {
		t.Fatal(err)
	}
	if again := s.next(t); again.GetEvent().GetOrderId() != "a" || again.GetDeliveryAttempt() != 2 {
		t.Fatalf("delivered %v, want a, attempt 2", again)
	}
}

// TestConsumeRedriveDelivers: a dead letter put back on this replica goes
// down the stream at once.
func TestConsumeRedriveDelivers(t *testing.T) {
	f := newFixture(t, GroupLimits{}, 1)
	s := f.consume(&pb.ConsumeExpirationsRequest{GroupId: f.group, Consumer: "c"})
	f.expire("a")
	m := s.next(t)
	if _, err := f.svc.NackExpirations(t.Context(), &pb.NackExpirationsRequest{GroupId: f.group, AckIds: []string{m.GetAckId()}}); err != nil {
		t.Fatal(err)
	}
	s.none(t)
	n, err := f.svc.RedriveDeadLetters(t.Context(), &pb.RedriveDeadLettersRequest{GroupId: f.group, All: true})
	if err != nil || n.GetRedriven() != 1 {
		t.Fatalf("redrive: %v, %v; want 1 redriven", n, err)
	}
	if again := s.next(t); again.GetEvent().GetOrderId() != "a" {
		t.Fatalf("delivered %v, want a", again)
	}
}

// TestConsumeEndHandsBack: a stream that ends hands its unacknowledged
// deliveries back at once, for another consumer, as their next attempt.
func TestConsumeEndHandsBack(t *testing.T) {
	f := newFixture(t, GroupLimits{}, 0)
	s := f.consume(&pb.ConsumeExpirationsRequest{GroupId: f.group, Consumer: "c"})
	f.expire("a", "b")
	acked := s.next(t)
	s.next(t)
	if _, err := f.svc.AcknowledgeExpirations(t.Context(), &pb.AcknowledgeExpirationsRequest{GroupId: f.group, AckIds: []string{acked.GetAckId()}}); err != nil {
		t.Fatal(err)
	}
	s.cancel()
	if err := s.end(t); f.code(err) != codes.Canceled {
		t.Fatalf("the stream ended with %v, want CANCELLED", err)
	}
	resp, err := f.svc.PullExpirations(t.Context(), &pb.PullExpirationsRequest{GroupId: f.group, Wait: durationpb.New(0)})
	if err != nil {
		t.Fatal(err)
	}
	r := resp.GetReceivedExpirations()
	if len(r) != 1 || r[0].GetEvent().GetOrderId() == acked.GetEvent().GetOrderId() || r[0].GetDeliveryAttempt() != 2 {
		t.Fatalf("pulled %v after the stream ended, want its unacknowledged event as attempt 2", r)
	}
}

// TestConsumeStop: Stop ends a stream UNAVAILABLE after it handed its
// deliveries back, and refuses a stream that comes later.
func TestConsumeStop(t *testing.T) {
	f := newFixture(t, GroupLimits{}, 0)
	s := f.consume(&pb.ConsumeExpirationsRequest{GroupId: f.group, Consumer: "c"})
	f.expire("a")
	s.next(t)
	ctx, cancel := context.WithTimeout(t.Context(), wait)
	defer cancel()
	f.svc.Stop(ctx)
	ds, err := f.st.Deliver(t.Context(), f.group, "other", 10)
	if err != nil || len(ds) != 1 || ds[0].AckID.Attempt != 2 {
		t.Fatalf("once Stop returned: %v, %v; want the stream's delivery back as attempt 2", ds, err)
	}
	if err := s.end(t); f.code(err) != codes.Unavailable {
		t.Fatalf("the stream ended with %v, want UNAVAILABLE", err)
	}
	late := &stream{ctx: t.Context(), header: make(chan struct{}), got: make(chan *pb.ReceivedExpiration, 1)}
	if err := f.svc.ConsumeExpirations(&pb.ConsumeExpirationsRequest{GroupId: f.group}, late); f.code(err) != codes.Unavailable {
		t.Fatalf("a stream after Stop: %v, want UNAVAILABLE", err)
	}
}

// TestConsumeRefusals: a stream the service cannot serve is refused at once
// with the code that says why.
func TestConsumeRefusals(t *testing.T) {
	f := newFixture(t, GroupLimits{MaxGroups: 10, MaxConsumers: 1, MaxInFlight: 5}, 0)
	if _, err := f.svc.CreateConsumerGroup(t.Context(), &pb.CreateConsumerGroupRequest{GroupId: "hooks",
		PushConfig: &pb.PushConfig{Url: "http://127.0.0.1:1/hook", Secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}}); err != nil {
		t.Fatal(err)
	}
	f.consume(&pb.ConsumeExpirationsRequest{GroupId: f.group})
	for _, tc := range []struct {
		name string
		req  *pb.ConsumeExpirationsRequest
		code codes.Code
	}{
		{"no group", &pb.ConsumeExpirationsRequest{}, codes.InvalidArgument},
		{"unknown group", &pb.ConsumeExpirationsRequest{GroupId: "nope"}, codes.NotFound},
		{"bad consumer", &pb.ConsumeExpirationsRequest{GroupId: f.group, Consumer: "a b"}, codes.InvalidArgument},
		{"negative max_in_flight", &pb.ConsumeExpirationsRequest{GroupId: f.group, MaxInFlight: -1}, codes.InvalidArgument},
		{"max_in_flight over the limit", &pb.ConsumeExpirationsRequest{GroupId: f.group, MaxInFlight: 6}, codes.ResourceExhausted},
		{"push group", &pb.ConsumeExpirationsRequest{GroupId: "hooks"}, codes.FailedPrecondition},
		{"streams at the limit", &pb.ConsumeExpirationsRequest{GroupId: f.group}, codes.ResourceExhausted},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &stream{ctx: t.Context(), header: make(chan struct{}), got: make(chan *pb.ReceivedExpiration, 1)}
			if err := f.svc.ConsumeExpirations(tc.req, s); f.code(err) != tc.code || f.svc.statusOf(t.Context(), err).Message() == "" {
				t.Fatalf("ConsumeExpirations = %v, want %s with a message", err, tc.code)
			}
		})
	}
}

// TestPullWaitsForFirst: a pull with nothing ready waits, and answers with
// what comes.
func TestPullWaitsForFirst(t *testing.T) {
	f := newFixture(t, GroupLimits{}, 0)
	type answer struct {
		resp *pb.PullExpirationsResponse
		err  error
	}
	done := make(chan answer, 1)
	go func() {
		resp, err := f.svc.PullExpirations(t.Context(), &pb.PullExpirationsRequest{GroupId: f.group, Wait: durationpb.New(wait)})
		done <- answer{resp, err}
	}()
	select {
	case <-f.st.looked:
	case <-time.After(wait):
		t.Fatalf("the pull did not look for deliveries within %s", wait)
	}
	f.expire("a")
	select {
	case a := <-done:
		if r := a.resp.GetReceivedExpirations(); a.err != nil || len(r) != 1 || r[0].GetEvent().GetOrderId() != "a" {
			t.Fatalf("pulled %v, %v; want a", r, a.err)
		}
	case <-time.After(wait):
		t.Fatalf("no answer within %s", wait)
	}
}
