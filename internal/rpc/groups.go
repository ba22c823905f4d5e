package rpc

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"sync"
	"time"

	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/orderexpiry/orderexpiry/internal/order"
	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// GroupLimits bound what consumer groups may hold; past each, a call is
// RESOURCE_EXHAUSTED.
type GroupLimits struct {
	// MaxGroups bounds the groups in the store.
	MaxGroups int
	// MaxConsumers bounds the ConsumeExpirations streams of one group open
	// at once on this replica.
	MaxConsumers int
	// MaxInFlight bounds a stream's max_in_flight and a pull's max_events.
	MaxInFlight int
}

// DefaultGroupLimits are the limits when Options gives none.
var DefaultGroupLimits = GroupLimits{MaxGroups: 100, MaxConsumers: 100, MaxInFlight: 1000}

// The settings a group gets when its creation leaves them out, and their
// bounds.
const (
	defaultAckDeadline   = 30 * time.Second
	minAckDeadline       = 100 * time.Millisecond
	maxAckDeadline       = 10 * time.Minute
	defaultMaxDeliveries = 5
	maxMaxDeliveries     = 100
	defaultMaxInFlight   = 100
	defaultPullWait      = 10 * time.Second
	maxPullWait          = time.Minute
	maxAckIDs            = 1000
	defaultPageSize      = 50
	maxPageSize          = 1000
)

// consumers are the ConsumeExpirations streams open on this replica, by
// group: acks and nacks made here tell them at once which of their
// deliveries are settled, and that redeliveries may be due.
type consumers struct {
	mu sync.Mutex
	m  map[string]map[*consumerStream]struct{}
	// stopped is set by stop: no stream opens after it. open counts the
	// streams added and not yet removed, which stop waits for.
	stopped bool
	open    sync.WaitGroup
}

// errShuttingDown ends the consume streams of a stopping server.
var errShuttingDown = order.Fail(order.ReasonShuttingDown, "", "the server is shutting down; reconnect")

// consumerStream is what a stream hears from the rest of the replica.
type consumerStream struct {
	// settled carries ack ids settled by calls on this replica.
	settled chan []order.AckID
	// kick says that redeliveries may be due now (a nack, a redrive).
	kick chan struct{}
}

// add registers a stream of group, unless the group has limit streams
// open; once the consumers are stopped it refuses with errShuttingDown.
func (c *consumers) add(group string, limit int) (*consumerStream, bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return nil, false, errShuttingDown
	}
	if c.m == nil {
		c.m = make(map[string]map[*consumerStream]struct{})
	}
	if len(c.m[group]) >= limit {
		return nil, false, nil
	}
	if c.m[group] == nil {
		c.m[group] = make(map[*consumerStream]struct{})
	}
	cs := &consumerStream{settled: make(chan []order.AckID, 16), kick: make(chan struct{}, 1)}
	c.m[group][cs] = struct{}{}
	// Under mu and before stopped is set: every Add happens before stop's
	// Wait, as a WaitGroup requires.
	c.open.Add(1)
	return cs, true, nil
}

func (c *consumers) remove(group string, cs *consumerStream) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m[group], cs)
	if len(c.m[group]) == 0 {
		delete(c.m, group)
	}
	c.open.Done()
}

// stop refuses new streams and waits until every open one is removed.
func (c *consumers) stop() {
	c.mu.Lock()
	c.stopped = true
	c.mu.Unlock()
	c.open.Wait()
}

// tell passes settled ack ids (none: only a kick) to a group's streams,
// never blocking: a stream too busy to hear frees its slots at the ack
// deadline instead.
func (c *consumers) tell(group string, settled []order.AckID, kick bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for cs := range c.m[group] {
		if len(settled) > 0 {
			select {
			case cs.settled <- settled:
			default:
			}
		}
		if kick {
			select {
			case cs.kick <- struct{}{}:
			default:
			}
		}
	}
}

// CreateConsumerGroup creates a group, or answers the one with the same
// settings.
func (s *Service) CreateConsumerGroup(ctx context.Context, req *pb.CreateConsumerGroupRequest) (*pb.ConsumerGroup, error) {
	g, err := s.groupSettings(req)
	if err != nil {
		return nil, err
	}
	var start order.Position
	if c := req.GetStartAfterCursor(); c != "" {
		p, err := order.ParsePosition("start_after_cursor", c)
		if err == nil {
			p, err = s.hub.CheckPosition(ctx, p)
		}
		if err != nil {
			return nil, order.WithField(err, "start_after_cursor")
		}
		start = p
	}
	if _, _, err := s.store.CreateGroup(ctx, g, start, s.groupLimits.MaxGroups); err != nil {
		return nil, err
	}
	return s.consumerGroup(ctx, g.ID)
}

// CheckGroupRequest says what is wrong with a request to create a group,
// as CreateConsumerGroup would, without the store: its settings, and the
// form of its start_after_cursor. The groups file is checked with it when
// the server starts.
func (s *Service) CheckGroupRequest(req *pb.CreateConsumerGroupRequest) error {
	if _, err := s.groupSettings(req); err != nil {
		return err
	}
	if c := req.GetStartAfterCursor(); c != "" {
		if _, err := order.ParsePosition("start_after_cursor", c); err != nil {
			return err
		}
	}
	return nil
}

// groupSettings reads and checks the settings of a group to create.
func (s *Service) groupSettings(req *pb.CreateConsumerGroupRequest) (order.Group, error) {
	g := order.Group{ID: req.GetGroupId(), AckDeadline: defaultAckDeadline, MaxDeliveries: defaultMaxDeliveries}
	if err := order.ValidateID("group_id", g.ID); err != nil {
		return g, err
	}
	if d := req.GetAckDeadline(); d != nil {
		if err := d.CheckValid(); err != nil || d.AsDuration() < minAckDeadline || d.AsDuration() > maxAckDeadline {
			return g, order.Fail(order.ReasonInvalidArgument, "ack_deadline", "ack_deadline %s is out of range: give %s to %s, or leave it out for %s",
				order.FormatDuration(d.AsDuration()), order.FormatDuration(minAckDeadline), order.FormatDuration(maxAckDeadline), order.FormatDuration(defaultAckDeadline))
		}
		g.AckDeadline = d.AsDuration().Truncate(time.Millisecond)
	}
	if n := req.GetMaxDeliveries(); n != 0 {
		if n < 1 || n > maxMaxDeliveries {
			return g, order.Fail(order.ReasonInvalidArgument, "max_deliveries", "max_deliveries %d is out of range: give 1 to %d, or leave it out for %d", n, maxMaxDeliveries, defaultMaxDeliveries)
		}
		g.MaxDeliveries = int(n)
	}
	pc, err := s.pushConfig(req.GetPushConfig(), g.AckDeadline)
	if err != nil {
		return g, err
	}
	g.Push = pc
	return g, nil
}

// consumerGroup reads a group and its state.
func (s *Service) consumerGroup(ctx context.Context, id string) (*pb.ConsumerGroup, error) {
	g, st, err := s.store.Group(ctx, id)
	if err != nil {
		return nil, err
	}
	return groupToProto(g, st), nil
}

func groupToProto(g order.Group, st order.GroupState) *pb.ConsumerGroup {
	p := &pb.ConsumerGroup{
		GroupId:       g.ID,
		AckDeadline:   durationpb.New(g.AckDeadline),
		MaxDeliveries: int32(g.MaxDeliveries),
		CreateTime:    timestamppb.New(g.CreatedAt),
		Position:      st.Position.String(),
		Backlog:       st.Backlog,
		InFlight:      st.InFlight,
		DeadLetters:   st.DeadLetters,
		PushConfig:    pushToProto(g.Push),
	}
	if !st.OldestUnacked.IsZero() {
		p.OldestUnackedAge = durationpb.New(max(time.Since(st.OldestUnacked), 0))
	}
	return p
}

// GetConsumerGroup returns a group with its state.
func (s *Service) GetConsumerGroup(ctx context.Context, req *pb.GetConsumerGroupRequest) (*pb.ConsumerGroup, error) {
	if err := order.ValidateID("group_id", req.GetGroupId()); err != nil {
		return nil, err
	}
	return s.consumerGroup(ctx, req.GetGroupId())
}

// ListConsumerGroups lists the groups by id, a page at a time; the page
// token is the id of the last group of the previous page.
func (s *Service) ListConsumerGroups(ctx context.Context, req *pb.ListConsumerGroupsRequest) (*pb.ListConsumerGroupsResponse, error) {
	size, err := pageSize(req.GetPageSize(), defaultPageSize)
	if err != nil {
		return nil, err
	}
	if t := req.GetPageToken(); t != "" {
		if err := order.ValidateID("page_token", t); err != nil {
			return nil, err
		}
	}
	groups, err := s.store.Groups(ctx)
	if err != nil {
		return nil, err
	}
	resp := &pb.ListConsumerGroupsResponse{}
	for _, g := range groups {
		if g.ID <= req.GetPageToken() {
			continue
		}
		if len(resp.ConsumerGroups) == size {
			resp.NextPageToken = resp.ConsumerGroups[size-1].GetGroupId()
			break
		}
		p, err := s.consumerGroup(ctx, g.ID)
		if err != nil {
			if order.KindOf(err) == order.KindNotFound {
				continue // deleted meanwhile
			}
			return nil, err
		}
		resp.ConsumerGroups = append(resp.ConsumerGroups, p)
	}
	return resp, nil
}

func pageSize(n int32, def int) (int, error) {
	switch {
	case n == 0:
		return def, nil
	case n < 0 || n > maxPageSize:
		return 0, order.Fail(order.ReasonInvalidArgument, "page_size", "page_size %d is out of range: give 1 to %d, or 0 for %d", n, maxPageSize, def)
	}
	return int(n), nil
}

// DeleteConsumerGroup deletes a group.
func (s *Service) DeleteConsumerGroup(ctx context.Context, req *pb.DeleteConsumerGroupRequest) (*emptypb.Empty, error) {
	if err := order.ValidateID("group_id", req.GetGroupId()); err != nil {
		return nil, err
	}
	if err := s.store.DeleteGroup(ctx, req.GetGroupId()); err != nil {
		return nil, err
	}
	if s.observer != nil {
		s.observer.GroupDeleted(req.GetGroupId())
	}
	return &emptypb.Empty{}, nil
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

// inFlightLimit checks a requested bound on unacknowledged deliveries.
func (s *Service) inFlightLimit(field string, n int32, def int) (int, error) {
	switch {
	case n == 0:
		return min(def, s.groupLimits.MaxInFlight), nil
	case n < 0:
		return 0, order.Fail(order.ReasonInvalidArgument, field, "%s %d must be more than zero, or 0 for %d", field, n, def)
	case int(n) > s.groupLimits.MaxInFlight:
		return 0, order.Fail(order.ReasonInFlightLimit, field, "%s %d is more than this service's limit of %d", field, n, s.groupLimits.MaxInFlight)
	}
	return int(n), nil
}

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
	c := &consumeLoop{s: s, g: g, consumer: consumer, limit: limit, cs: cs, inFlight: map[order.AckID]time.Time{},
		send: func(d order.Delivery) error { return stream.Send(deliveryToProto(d)) }}
	defer c.handBack()
	return c.run(ctx)
}

// consumeLoop is one ConsumeExpirations stream: it delivers while it has
// room under its in-flight bound, and waits for new events, settled
// deliveries or due redeliveries.
type consumeLoop struct {
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

func (c *consumeLoop) run(ctx context.Context) error {
	// A stream hears at once of an event handed back on this replica, and
	// of the others within RedeliveryPoll.
	poll := time.NewTicker(c.g.RedeliveryPoll())
	defer poll.Stop()
	seen, appended := c.s.hub.Appended()
	// nil: every partition may have something for this consumer.
	var changed []int
	all := true
	for {
		now := time.Now()
		for id, deadline := range c.inFlight {
			if !now.Before(deadline) {
				delete(c.inFlight, id)
			}
		}
		if room := c.limit - len(c.inFlight); room > 0 && (all || len(changed) > 0) {
			// Events taken before an error (from the partitions read
			// first) are this consumer's now: they are sent before the
			// error ends the stream, or each would wait out its ack
			// deadline and lose an attempt.
			ds, err := c.deliver(ctx, all, changed, room)
			for _, d := range ds {
				if err := c.send(d); err != nil {
					return err
				}
				c.inFlight[d.AckID] = time.Now().Add(c.g.AckDeadline)
				c.s.observeDelivery(c.g.ID, d)
			}
			if err != nil {
				return err
			}
			// A full batch: there may be more ready at once.
			if len(ds) == room {
				continue
			}
		}
		all, changed = false, nil
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-c.s.stopping:
			// handBack hands the stream's deliveries on before the
			// status ends it.
			return errShuttingDown
		case <-appended:
			var pos order.Position
			pos, appended = c.s.hub.Appended()
			changed = order.Moved(seen, pos)
			all = changed == nil
			seen = pos
		case ids := <-c.cs.settled:
			// Only a stream that was full has events waiting for the room
			// an ack makes; any other was woken for them already.
			full := len(c.inFlight) >= c.limit
			for _, id := range ids {
				delete(c.inFlight, id)
			}
			all = full && len(c.inFlight) < c.limit
		case <-c.cs.kick:
			all = true
		case <-poll.C:
			all = true
		}
	}
}

// deliver asks the store for up to room deliveries: from the partitions
// that changed when the store can deliver from one, from all otherwise.
func (c *consumeLoop) deliver(ctx context.Context, all bool, changed []int, room int) ([]order.Delivery, error) {
	ds, err := order.DeliverChanged(ctx, c.s.store, c.g.ID, c.consumer, all, changed, room)
	return c.s.hub.DropRepeats(ctx, c.s.store, c.g.ID, ds), err
}

// handBack hands the stream's unsettled deliveries on at once when it ends,
// instead of after their ack deadline.
func (c *consumeLoop) handBack() {
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

func deliveryToProto(d order.Delivery) *pb.ReceivedExpiration {
	ev := eventToProto(d.Event)
	ev.Cursor = ""
	return &pb.ReceivedExpiration{AckId: d.AckID.String(), DeliveryAttempt: int32(d.AckID.Attempt), Event: ev}
}

// PullExpirations returns a group's ready deliveries, waiting for the first.
func (s *Service) PullExpirations(ctx context.Context, req *pb.PullExpirationsRequest) (*pb.PullExpirationsResponse, error) {
	group := req.GetGroupId()
	if err := order.ValidateID("group_id", group); err != nil {
		return nil, err
	}
	consumer, err := consumerOf(req.GetConsumer(), "pull")
	if err != nil {
		return nil, err
	}
	n, err := s.inFlightLimit("max_events", req.GetMaxEvents(), defaultMaxInFlight)
	if err != nil {
		return nil, err
	}
	wait := defaultPullWait
	if w := req.GetWait(); w != nil {
		if err := w.CheckValid(); err != nil || w.AsDuration() < 0 || w.AsDuration() > maxPullWait {
			return nil, order.Fail(order.ReasonInvalidArgument, "wait", "wait %s is out of range: give 0s to %s, or leave it out for %s", order.FormatDuration(w.AsDuration()), order.FormatDuration(maxPullWait), order.FormatDuration(defaultPullWait))
		}
		wait = w.AsDuration()
	}
	until := time.Now().Add(wait)
	g, _, err := s.store.Group(ctx, group)
	if err != nil {
		return nil, err
	}
	if err := notPushed(g); err != nil {
		return nil, err
	}
	for {
		_, appended := s.hub.Appended()
		ds, err := s.store.Deliver(ctx, group, consumer, n)
		if err != nil {
			return nil, err
		}
		ds = s.hub.DropRepeats(ctx, s.store, group, ds)
		left := time.Until(until)
		if len(ds) > 0 || left <= 0 {
			resp := &pb.PullExpirationsResponse{}
			for _, d := range ds {
				resp.ReceivedExpirations = append(resp.ReceivedExpirations, deliveryToProto(d))
				s.observeDelivery(group, d)
			}
			return resp, nil
		}
		t := time.NewTimer(min(left, g.RedeliveryPoll()))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-s.stopping:
			// The server is stopping: the pull has nothing, and says so
			// at once. Another look could take the deliveries a stopping
			// stream just handed back, for a caller about to lose this
			// replica.
			t.Stop()
			return &pb.PullExpirationsResponse{}, nil
		case <-appended:
		case <-t.C:
		}
		t.Stop()
	}
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

// parseAckIDs reads ack ids; those that are no ack id are reported unknown.
func parseAckIDs(raw []string) (ids []order.AckID, at []int, results []*pb.AckIdResult, err error) {
	if len(raw) == 0 || len(raw) > maxAckIDs {
		return nil, nil, nil, order.Fail(order.ReasonInvalidArgument, "ack_ids", "ack_ids has %d ids: give 1 to %d", len(raw), maxAckIDs)
	}
	results = make([]*pb.AckIdResult, len(raw))
	for i, r := range raw {
		results[i] = &pb.AckIdResult{AckId: r, Status: pb.AckIdStatus_ACK_ID_STATUS_UNKNOWN}
		if id, ok := order.ParseAckID(r); ok {
			ids = append(ids, id)
			at = append(at, i)
		}
	}
	return ids, at, results, nil
}

var ackStatusToProto = map[order.AckStatus]pb.AckIdStatus{
	order.AckDone:        pb.AckIdStatus_ACK_ID_STATUS_OK,
	order.AckUnknown:     pb.AckIdStatus_ACK_ID_STATUS_UNKNOWN,
	order.AckNotInFlight: pb.AckIdStatus_ACK_ID_STATUS_NOT_IN_FLIGHT,
	order.AckExpired:     pb.AckIdStatus_ACK_ID_STATUS_EXPIRED,
}

// settle runs an ack or a nack and reports each id's outcome; the
// deliveries settled are told to this replica's streams of the group.
func (s *Service) settle(ctx context.Context, group string, raw []string, op func([]order.AckID) ([]order.AckStatus, error), acked bool) ([]*pb.AckIdResult, error) {
	if err := order.ValidateID("group_id", group); err != nil {
		return nil, err
	}
	ids, at, results, err := parseAckIDs(raw)
	if err != nil {
		return nil, err
	}
	if len(ids) == 0 {
		return results, nil
	}
	sts, err := op(ids)
	if err != nil {
		return nil, err
	}
	var settled []order.AckID
	now := time.Now()
	for j, st := range sts {
		results[at[j]].Status = ackStatusToProto[st]
		if st == order.AckDone {
			settled = append(settled, ids[j])
			if acked && s.observer != nil {
				s.observer.Acknowledged(group, now.Sub(time.UnixMilli(int64(ids[j].Cursor.Ms))))
			}
		}
	}
	if len(settled) > 0 {
		s.consumers.tell(group, settled, !acked)
	}
	return results, nil
}

// AcknowledgeExpirations acknowledges deliveries.
func (s *Service) AcknowledgeExpirations(ctx context.Context, req *pb.AcknowledgeExpirationsRequest) (*pb.AcknowledgeExpirationsResponse, error) {
	results, err := s.settle(ctx, req.GetGroupId(), req.GetAckIds(), func(ids []order.AckID) ([]order.AckStatus, error) {
		return s.store.Ack(ctx, req.GetGroupId(), ids)
	}, true)
	if err != nil {
		return nil, err
	}
	return &pb.AcknowledgeExpirationsResponse{Results: results}, nil
}

// NackExpirations hands deliveries back.
func (s *Service) NackExpirations(ctx context.Context, req *pb.NackExpirationsRequest) (*pb.NackExpirationsResponse, error) {
	var retry time.Duration
	if r := req.GetRetryAfter(); r != nil {
		if err := r.CheckValid(); err != nil || r.AsDuration() < 0 {
			return nil, order.Fail(order.ReasonInvalidArgument, "retry_after", "retry_after %s must not be negative", order.FormatDuration(r.AsDuration()))
		}
		retry = r.AsDuration()
	}
	if err := order.ValidateNackReason(req.GetReason()); err != nil {
		return nil, err
	}
	results, err := s.settle(ctx, req.GetGroupId(), req.GetAckIds(), func(ids []order.AckID) ([]order.AckStatus, error) {
		return s.store.Nack(ctx, req.GetGroupId(), ids, retry, req.GetReason())
	}, false)
	if err != nil {
		return nil, err
	}
	return &pb.NackExpirationsResponse{Results: results}, nil
}

// ListDeadLetters lists a group's dead letters.
func (s *Service) ListDeadLetters(ctx context.Context, req *pb.ListDeadLettersRequest) (*pb.ListDeadLettersResponse, error) {
	if err := order.ValidateID("group_id", req.GetGroupId()); err != nil {
		return nil, err
	}
	size, err := pageSize(req.GetPageSize(), 100)
	if err != nil {
		return nil, err
	}
	letters, next, err := s.store.DeadLetters(ctx, req.GetGroupId(), req.GetPageToken(), size)
	if err != nil {
		return nil, err
	}
	resp := &pb.ListDeadLettersResponse{NextPageToken: next}
	for _, l := range letters {
		ev := eventToProto(l.Event)
		ev.Cursor = ""
		resp.DeadLetters = append(resp.DeadLetters, &pb.DeadLetter{DeadLetterId: l.ID, DeliveryAttempts: int32(l.Attempts), Event: ev,
			LastFailure: l.Reason, LastFailureTime: timestampOrNil(l.FailedAt),
			FirstDeliveryTime: timestampOrNil(l.FirstDelivered), LastDeliveryTime: timestampOrNil(l.LastDelivered)})
	}
	return resp, nil
}

// RedriveDeadLetters puts dead letters back.
func (s *Service) RedriveDeadLetters(ctx context.Context, req *pb.RedriveDeadLettersRequest) (*pb.RedriveDeadLettersResponse, error) {
	if err := order.ValidateID("group_id", req.GetGroupId()); err != nil {
		return nil, err
	}
	ids := req.GetDeadLetterIds()
	switch {
	case len(ids) == 0 && !req.GetAll():
		return nil, order.Fail(order.ReasonInvalidArgument, "dead_letter_ids", "give dead_letter_ids, or all: true to put every dead letter back")
	case len(ids) > 0 && req.GetAll():
		return nil, order.Fail(order.ReasonInvalidArgument, "dead_letter_ids", "give dead_letter_ids or all, not both")
	case len(ids) > maxAckIDs:
		return nil, order.Fail(order.ReasonInvalidArgument, "dead_letter_ids", "dead_letter_ids has %d ids: give at most %d, or all", len(ids), maxAckIDs)
	}
	for _, id := range ids {
		if _, _, ok := order.ParseDeadLetterID(id); !ok {
			return nil, order.Fail(order.ReasonInvalidID, "dead_letter_ids", "dead_letter_ids: %q is not a dead letter id; pass the dead_letter_id of a listed one, like \"0/1732170000000-0\"", order.Clip(id))
		}
	}
	n, err := s.store.Redrive(ctx, req.GetGroupId(), ids)
	if err != nil {
		return nil, err
	}
	if n > 0 {
		s.consumers.tell(req.GetGroupId(), nil, true)
	}
	return &pb.RedriveDeadLettersResponse{Redriven: int64(n)}, nil
}

// observeDelivery tells the observer of a delivery.
func (s *Service) observeDelivery(group string, d order.Delivery) {
	if s.observer != nil {
		s.observer.Delivered(group, d.AckID.Attempt)
	}
}

// timestampOrNil is t as a timestamp, or nil (unset) for the zero time.
func timestampOrNil(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}
