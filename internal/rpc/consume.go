package rpc

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"time"

	"google.golang.org/grpc/metadata"

	"github.com/orderexpiry/orderexpiry/internal/consume"
	"github.com/orderexpiry/orderexpiry/internal/order"
	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// ConsumeExpirations streams a group's deliveries to one consumer.
func (s *Service) ConsumeExpirations(req *pb.ConsumeExpirationsRequest, stream pb.OrderService_ConsumeExpirationsServer) error {
	ctx := stream.Context()
	group := req.GetGroupId()
	if err := order.ValidateID("group_id", group); err != nil {
		return err
	}
	consumer, err := consumerOf(req.GetConsumer(), "")
	if err != nil {
		return err
	}
	limit, err := s.inFlightLimit("max_in_flight", req.GetMaxInFlight(), defaultMaxInFlight)
	if err != nil {
		return err
	}
	g, _, err := s.store.Group(ctx, group)
	if err != nil {
		return err
	}
	if err := notPushed(g); err != nil {
		return err
	}
	cs, ok, err := s.consumers.add(group, s.groupLimits.MaxConsumers)
	if err != nil {
		return err
	}
	if !ok {
		return order.Fail(order.ReasonTooManyStreams, "group_id", "consumer group %q has %d streams open on this replica, the most it serves; close one or consume through another replica", group, s.groupLimits.MaxConsumers)
	}
	// Removed only after the hand-back (defers run last first): a stopping
	// server closes its store once every stream is removed.
	defer s.consumers.remove(group, cs)
	if err := stream.SendHeader(metadata.MD{}); err != nil {
		return err
	}
	sink := &streamSink{s: s, g: g, consumer: consumer, limit: limit, cs: cs, inFlight: map[order.AckID]time.Time{},
		send: func(d order.Delivery) error { return stream.Send(deliveryToProto(d)) }}
	defer sink.handBack()
	src := consume.Source{Store: s.store, Group: g, Consumer: consumer, Appended: s.hub.Appended, DropRepeats: s.hub.DropRepeats, Poll: s.consumePoll}
	// A stream hears at once of an event handed back on this replica, and
	// of the others within the group's RedeliveryPoll.
	return consume.Run(ctx, src, sink)
}

// streamSink is one ConsumeExpirations stream as the consume loop's Sink: it
// sends each delivery down the stream and has room while its deliveries
// not yet settled are fewer than its max_in_flight. Only the loop's
// goroutine touches it; other calls reach it through its mailbox (cs).
type streamSink struct {
	s        *Service
	g        order.Group
	consumer string
	limit    int
	cs       *consumerStream
	send     func(order.Delivery) error
	// inFlight holds the deliveries this stream made and has not seen
	// settled, each with its ack deadline by this replica's clock.
	inFlight map[order.AckID]time.Time
}

// Room forgets the deliveries whose ack deadline passed (the group has them
// back) and counts the slots left.
func (c *streamSink) Room() int {
	now := time.Now()
	for id, deadline := range c.inFlight {
		if !now.Before(deadline) {
			delete(c.inFlight, id)
		}
	}
	return c.limit - len(c.inFlight)
}

// Put sends a delivery and keeps it until it is settled or its ack deadline
// passes.
func (c *streamSink) Put(_ context.Context, d order.Delivery) error {
	if err := c.send(d); err != nil {
		return err
	}
	c.inFlight[d.AckID] = time.Now().Add(c.g.AckDeadline)
	c.s.observeDelivery(c.g.ID, d)
	return nil
}

// Failed ends the stream: its consumer reconnects, to this replica or
// another.
func (c *streamSink) Failed(_ context.Context, err error) error { return err }

func (c *streamSink) Wake() <-chan struct{} { return c.cs.wake }

// Woken reads the mailbox: settled deliveries free their slots, a kick says
// redeliveries may be due, and a stopping server ends the stream, whose
// deliveries handBack hands on before the status ends it.
func (c *streamSink) Woken() (bool, error) {
	n := c.cs.take()
	if n.stopping {
		return false, errShuttingDown
	}
	// Only a stream that was full has events waiting for the room an ack
	// makes; any other was woken for them already.
	full := len(c.inFlight) >= c.limit
	for _, ids := range n.settled {
		for _, id := range ids {
			delete(c.inFlight, id)
		}
	}
	return n.kick || (full && len(c.inFlight) < c.limit), nil
}

// handBack hands the stream's unsettled deliveries on at once when it ends,
// instead of after their ack deadline.
func (c *streamSink) handBack() {
	if len(c.inFlight) == 0 {
		return
	}
	ids := make([]order.AckID, 0, len(c.inFlight))
	for id := range c.inFlight {
		ids = append(ids, id)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if _, err := c.s.store.Nack(ctx, c.g.ID, ids, 0, order.ReasonStreamClosed); err != nil {
		c.s.log.Warn("could not hand a closed stream's deliveries on; they are delivered again after their ack deadline",
			"group", c.g.ID, "consumer", c.consumer, "deliveries", len(ids), "err", err)
		return
	}
	c.s.consumers.tell(c.g.ID, nil, true)
}

// consumerOf checks a consumer name, or makes one for a caller that gave
// none.
func consumerOf(name, def string) (string, error) {
	if name == "" {
		if def != "" {
			return def, nil
		}
		b := make([]byte, 8)
		_, _ = rand.Read(b)
		return "stream-" + hex.EncodeToString(b), nil
	}
	return name, order.ValidateID("consumer", name)
}

// notPushed refuses a consumer of a push group: the replicas' deliverers
// take its events, and a consumer beside them would take some away from
// the endpoint without a word.
func notPushed(g order.Group) error {
	if g.Push.Enabled() {
		return order.Fail(order.ReasonPushGroup, "group_id", "consumer group %q delivers its events to its push endpoint; consume a group created without push_config", g.ID)
	}
	return nil
}

func deliveryToProto(d order.Delivery) *pb.ReceivedExpiration {
	ev := eventToProto(d.Event)
	ev.Cursor = ""
	return &pb.ReceivedExpiration{AckId: d.AckID.String(), DeliveryAttempt: int32(d.AckID.Attempt), Event: ev}
}

// observeDelivery tells the observer of a delivery.
func (s *Service) observeDelivery(group string, d order.Delivery) {
	if s.observer != nil {
		s.observer.Delivered(group, d.AckID.Attempt)
	}
}
