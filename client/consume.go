package client

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/orderexpiry/orderexpiry/internal/order"
	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// ConsumeOptions say how Consume takes a group's expirations. The zero
// value runs one handler at a time, under a name the service makes for
// each stream, and hands a failed expiration back to be delivered again at
// once.
type ConsumeOptions struct {
	// Consumer names this consumer in the group (the rules of an order
	// id); empty: a name the service makes for each stream.
	Consumer string
	// Concurrency is how many handlers run at once; 0: 1.
	Concurrency int
	// MaxInFlight bounds the deliveries the service sends this consumer
	// before it settles (acknowledges or hands back) them; 0: Concurrency,
	// at least Concurrency. A delivery's ack deadline runs from when the
	// service sends it, so a MaxInFlight above Concurrency prefetches
	// deliveries that wait for a free handler meanwhile; one whose ack
	// deadline passes while it waits is not handled (the group delivers it
	// again). The service refuses more than its limit
	// (-group-max-in-flight, 1000 by default) with RESOURCE_EXHAUSTED.
	MaxInFlight int
	// NackDelay is how long after its handler failed an expiration is
	// delivered again (to this consumer or another); 0: at once. At most
	// the group's ack deadline: Consume refuses a longer one.
	NackDelay time.Duration
}

// withDefaults checks o and fills in its defaults.
func (o ConsumeOptions) withDefaults() (ConsumeOptions, error) {
	switch {
	case o.Concurrency < 0:
		return o, fmt.Errorf("orderexpiry client: ConsumeOptions.Concurrency %d must be 1 or more (0: 1)", o.Concurrency)
	case o.MaxInFlight < 0 || o.MaxInFlight > math.MaxInt32:
		return o, fmt.Errorf("orderexpiry client: ConsumeOptions.MaxInFlight %d must be from 1 to %d (0: Concurrency)", o.MaxInFlight, math.MaxInt32)
	case o.NackDelay < 0:
		return o, fmt.Errorf("orderexpiry client: ConsumeOptions.NackDelay %s must not be negative (0: at once)", o.NackDelay)
	}
	o.Concurrency = max(o.Concurrency, 1)
	if o.MaxInFlight == 0 {
		o.MaxInFlight = o.Concurrency
	}
	// Fewer deliveries than handlers would leave handlers idle for good.
	if o.MaxInFlight < o.Concurrency {
		return o, fmt.Errorf("orderexpiry client: ConsumeOptions.MaxInFlight %d is less than Concurrency %d: at most %d handlers could run at once", o.MaxInFlight, o.Concurrency, o.MaxInFlight)
	}
	return o, nil
}

// ackTimeout bounds an acknowledgement or a nack, which Consume sends also
// once ctx has ended: an event handled is acknowledged.
const ackTimeout = 10 * time.Second

// Consume calls handle with the expirations of the consumer group, up to
// opts.Concurrency at once, each in a goroutine of its own. When handle
// returns nil, the expiration is acknowledged: the group never delivers it
// again. When handle returns an error, it is handed back (nacked) with the
// error's text as the reason, to be delivered again after opts.NackDelay,
// to this consumer or another, until the group's max_deliveries make it a
// dead letter, which then shows that reason. Delivery is at least once: an
// expiration whose acknowledgement did not reach the service is delivered
// again after the group's ack deadline, so handle should bear a repeat.
//
// The context handle gets ends when the delivery's ack deadline passes (by
// the client's clock, from when the delivery arrived), when ctx ends, and
// when the stream that brought the delivery ends (the service then hands
// it back to the group): in each case the group delivers the expiration
// again, so handle may as well stop. An error handle returns once its
// context has ended is not sent as a nack, since the expiration is back in
// the group already; nil is still sent as an acknowledgement, which the
// service takes unless the expiration was delivered again meanwhile.
//
// Once ctx ends, Consume waits for the handlers running to return and
// settles their expirations before it closes the stream and returns ctx's
// error. Whenever the stream ends, Consume waits for its handlers likewise
// and opens it again after a backoff. It returns the error of a stream that
// opening again would not mend: an unknown group (NOT_FOUND), a malformed
// consumer name (INVALID_ARGUMENT), a refused token (UNAUTHENTICATED); and
// at once, options that do not fit (Concurrency or MaxInFlight below 1,
// MaxInFlight below Concurrency, NackDelay longer than the group's ack
// deadline).
func (c *Client) Consume(ctx context.Context, group string, opts ConsumeOptions, handle func(ctx context.Context, ev *pb.ExpirationEvent) error) error {
	opts, err := opts.withDefaults()
	if err != nil {
		return err
	}
	return c.reopening(ctx, "consumer's stream", func() []any { return []any{"group", group} }, func(retries *int) error {
		return c.consumeOnce(ctx, group, opts, retries, handle)
	})
}

// received is a delivery and when it arrived, from which its ack deadline
// is counted.
type received struct {
	rec *pb.ReceivedExpiration
	at  time.Time
}

// consumeOnce runs one stream of Consume until it ends, and returns once
// the handlers it started have returned; *retries is reset once the stream
// is open.
func (c *Client) consumeOnce(ctx context.Context, group string, opts ConsumeOptions, retries *int, handle func(context.Context, *pb.ExpirationEvent) error) error {
	// The group's ack deadline bounds each handler's context.
	g, err := c.GetConsumerGroup(ctx, &pb.GetConsumerGroupRequest{GroupId: group})
	if err != nil {
		return err
	}
	ackDeadline := g.GetAckDeadline().AsDuration()
	if opts.NackDelay > ackDeadline {
		return finalError{fmt.Errorf("orderexpiry client: ConsumeOptions.NackDelay %s is longer than the ack deadline of group %q (%s), the longest the service waits before it delivers a nacked expiration again",
			opts.NackDelay, group, ackDeadline)}
	}
	// The stream outlives ctx until the handlers running have returned and
	// their expirations are settled: closing it hands its deliveries back
	// at once, and an acknowledgement after that would be refused.
	sctx, closeStream := context.WithCancel(context.WithoutCancel(ctx))
	defer closeStream()
	// Until the first delivery, no handler runs: ctx's end closes the
	// stream at once.
	stopOpening := context.AfterFunc(ctx, closeStream)
	stream, err := c.ConsumeExpirations(sctx, &pb.ConsumeExpirationsRequest{GroupId: group, Consumer: opts.Consumer, MaxInFlight: int32(opts.MaxInFlight)})
	if err != nil {
		return err
	}
	if md, _ := stream.Header(); md != nil {
		*retries = 0
	}
	if !stopOpening() {
		return ctx.Err()
	}

	recs := make(chan received)
	ended := make(chan error, 1)
	go func() {
		for {
			rec, err := stream.Recv()
			if err != nil {
				ended <- err
				return
			}
			select {
			case recs <- received{rec: rec, at: time.Now()}:
			case <-sctx.Done():
				return
			}
		}
	}()

	// The handlers' contexts end with the stream (the service hands its
	// deliveries back) as well as with ctx.
	hctx, stopHandlers := context.WithCancel(ctx)
	var running sync.WaitGroup
	// Deferred after closeStream, so run before it.
	defer running.Wait()
	defer stopHandlers()
	slots := make(chan struct{}, opts.Concurrency)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-ended:
			return err
		case r := <-recs:
			running.Go(func() {
				dctx, cancel := context.WithDeadline(hctx, r.at.Add(ackDeadline))
				defer cancel()
				c.handleOne(dctx, ctx, group, opts.NackDelay, slots, r.rec, handle)
			})
		}
	}
}

// handleOne runs handle with the delivery rec once one of the slots is
// free, and settles rec with its outcome. dctx is the delivery's context;
// ctx is Consume's, whose values the acknowledgement keeps.
func (c *Client) handleOne(dctx, ctx context.Context, group string, nackDelay time.Duration, slots chan struct{}, rec *pb.ReceivedExpiration, handle func(context.Context, *pb.ExpirationEvent) error) {
	held := false
	select {
	case slots <- struct{}{}:
		held = true
	case <-dctx.Done():
	}
	// Both cases may have been ready at once.
	if dctx.Err() != nil {
		if held {
			<-slots
		}
		if errors.Is(dctx.Err(), context.DeadlineExceeded) {
			c.opts.Logger.Warn("orderexpiry: an expiration waited out its ack deadline for a free handler, and was not handled; the group will deliver it again (raise ConsumeOptions.Concurrency or lower MaxInFlight)",
				"group", group, "order_id", rec.GetEvent().GetOrderId())
		}
		return
	}
	err := handle(dctx, rec.GetEvent())
	<-slots
	if err != nil && dctx.Err() != nil {
		// The expiration is back in the group already; a nack now would
		// only fail, or record a failure that is the stop's.
		return
	}
	c.settle(ctx, group, nackDelay, rec, err)
}

// settle acknowledges a delivery when its handler returned nil, and hands
// it back after nackDelay otherwise. A failure is logged: the group
// delivers the event again after its ack deadline either way.
func (c *Client) settle(ctx context.Context, group string, nackDelay time.Duration, rec *pb.ReceivedExpiration, handled error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ackTimeout)
	defer cancel()
	ids := []string{rec.GetAckId()}
	var results []*pb.AckIdResult
	var err error
	what := "acknowledge"
	if handled == nil {
		var resp *pb.AcknowledgeExpirationsResponse
		resp, err = c.AcknowledgeExpirations(ctx, &pb.AcknowledgeExpirationsRequest{GroupId: group, AckIds: ids})
		results = resp.GetResults()
	} else {
		what = "hand back"
		req := &pb.NackExpirationsRequest{GroupId: group, AckIds: ids, Reason: order.CleanReason(handled.Error())}
		if nackDelay > 0 {
			req.RetryAfter = durationpb.New(nackDelay)
		}
		var resp *pb.NackExpirationsResponse
		resp, err = c.NackExpirations(ctx, req)
		results = resp.GetResults()
	}
	if err == nil && len(results) == 1 && results[0].GetStatus() != pb.AckIdStatus_ACK_ID_STATUS_OK {
		err = fmt.Errorf("the service answered %v", results[0].GetStatus())
	}
	if err != nil {
		c.opts.Logger.Warn("orderexpiry: could not "+what+" an expiration; the group will deliver it again",
			"group", group, "order_id", rec.GetEvent().GetOrderId(), "err", err)
	}
}
