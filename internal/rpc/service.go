// Package rpc is the gRPC face of the service: it checks requests, calls the
// store and translates between protobuf messages and the domain, and
// between domain errors and status codes, in this one place.
package rpc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/orderexpiry/orderexpiry/internal/filter"
	"github.com/orderexpiry/orderexpiry/internal/inproc"
	"github.com/orderexpiry/orderexpiry/internal/order"
	"github.com/orderexpiry/orderexpiry/internal/push"
	"github.com/orderexpiry/orderexpiry/internal/watch"
	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// Store is what the service needs of an order store.
type Store interface {
	Checkout(ctx context.Context, id string, ttl time.Duration, md map[string]string) (order.Order, bool, error)
	BatchCheckout(ctx context.Context, items []order.CheckoutItem) []order.CheckoutResult
	Get(ctx context.Context, id string) (order.Order, error)
	Complete(ctx context.Context, id string) (order.Order, error)
	Cancel(ctx context.Context, id string) (order.Order, error)
	Reschedule(ctx context.Context, id string, r order.Reschedule) (order.Order, error)
	Stats(ctx context.Context) (order.Stats, error)
	order.GroupStore
	filter.Lister
	order.BulkStore
}

// Observer hears of the orders calls create and close, and of the
// deliveries of consumer groups, for metrics.
type Observer interface {
	CheckedOut()
	Closed(order.Status)
	// Delivered counts a delivery to a group's consumer; attempt is 1 for
	// the first.
	Delivered(group string, attempt int)
	// Acknowledged observes an acknowledgement, age after the event was
	// logged (within milliseconds of its deadline).
	Acknowledged(group string, age time.Duration)
	// GroupDeleted forgets what was observed of a group deleted through
	// this replica.
	GroupDeleted(group string)
}

// Options configure the service.
type Options struct {
	// Limits bound what a checkout may ask for.
	Limits order.Limits
	// Observer, when set, hears of each order created, completed or
	// cancelled.
	Observer Observer
	// Logger receives the detail of internal errors; nil means
	// slog.Default().
	Logger *slog.Logger
	// Groups bound the consumer groups; the zero value means
	// DefaultGroupLimits.
	Groups GroupLimits
	// Lateness, when set, is the lateness GetStats reports; the hub's
	// OnPublish must feed it.
	Lateness *Lateness
	// Push says which endpoints a push group may name; the zero value
	// allows none.
	Push push.Policy
	// Settings name the server settings that lift refusals, for the
	// errors' messages and details; nil names none.
	Settings Settings
}

// Service implements orderexpiry.v1.OrderService.
type Service struct {
	pb.UnimplementedOrderServiceServer

	// preEncode sends events in the wire form shared by all watchers; it
	// is set by NewServer, whose server uses Codec.
	preEncode bool

	store       Store
	hub         *watch.Hub
	limits      order.Limits
	groupLimits GroupLimits
	observer    Observer
	log         *slog.Logger
	encoded     *encodedEvents
	consumers   consumers
	lateness    *Lateness
	push        push.Policy
	settings    Settings
	// stopping is closed by Stop: long pulls end. (Consume streams hear
	// of it from consumers.stop.)
	stopping chan struct{}
	stopOnce sync.Once

	// consumePoll, when set, replaces each group's RedeliveryPoll in the
	// consume streams; tests set it long, so that only wakes deliver.
	consumePoll time.Duration
}

// New returns the service over a store and the hub that fans out its log.
func New(store Store, hub *watch.Hub, opts Options) *Service {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Groups == (GroupLimits{}) {
		opts.Groups = DefaultGroupLimits
	}
	return &Service{store: store, hub: hub, limits: opts.Limits, groupLimits: opts.Groups, observer: opts.Observer, log: opts.Logger, encoded: newEncodedEvents(4096), lateness: opts.Lateness, push: opts.Push, settings: opts.Settings, stopping: make(chan struct{})}
}

// Stop ends the consumer groups' open calls for a stop of the server, as
// the hub ends the watches: a long pull answers at once with what it has,
// possibly nothing, and a ConsumeExpirations stream hands its
// unacknowledged deliveries back to its group, for another consumer to
// take them at once, and ends UNAVAILABLE. A stream that comes later is
// refused UNAVAILABLE; a pull that comes later looks once and answers at
// once. Stop returns when every stream has handed
// its deliveries back, or when ctx ends: the store must stay open until
// then.
func (s *Service) Stop(ctx context.Context) {
	s.stopOnce.Do(func() { close(s.stopping) })
	ended := make(chan struct{})
	go func() {
		s.consumers.stop()
		close(ended)
	}()
	select {
	case <-ended:
	case <-ctx.Done():
		s.log.Warn("consumer streams did not hand their deliveries back in time; they are delivered again after their ack deadline")
	}
}

// NewServer returns a gRPC server that serves the service with Codec, so
// that each live event is encoded once for all watchers, and with opts.
// Serving the service on a server without Codec still works, but encodes
// each event once per watcher. A request that Codec could not decode is
// refused by decodeUnary or decodeStream, which run after the interceptors
// of opts (a token check among them), so that such a call is let in or
// not like any other. Before them, the service's own interceptors (see
// UnaryInterceptors) turn every error a method returns into its status.
func NewServer(svc *Service, opts ...grpc.ServerOption) *grpc.Server {
	svc.preEncode = true
	opts = append([]grpc.ServerOption{grpc.ForceServerCodecV2(Codec)}, opts...)
	s := grpc.NewServer(append(opts,
		grpc.ChainUnaryInterceptor(svc.UnaryInterceptors()...),
		grpc.ChainStreamInterceptor(svc.StreamInterceptors()...))...)
	pb.RegisterOrderServiceServer(s, svc)
	return s
}

// Checkout creates a pending order, or returns the one already pending when
// this is the same request.
func (s *Service) Checkout(ctx context.Context, req *pb.CheckoutRequest) (*pb.CheckoutResponse, error) {
	it, err := s.checkoutItem(req)
	if err != nil {
		return nil, err
	}
	// One path for a checkout, alone or in a batch: the batch's item
	// carries a deadline as well as a ttl.
	r := s.store.BatchCheckout(ctx, []order.CheckoutItem{it})[0]
	o, created, err := r.Order, r.Created, r.Err
	if err != nil {
		return nil, err
	}
	if created && s.observer != nil {
		s.observer.CheckedOut()
	}
	return &pb.CheckoutResponse{Order: toProto(o), Created: created}, nil
}

// BatchCheckout checks out many orders, answering each on its own.
func (s *Service) BatchCheckout(ctx context.Context, req *pb.BatchCheckoutRequest) (*pb.BatchCheckoutResponse, error) {
	switch n := len(req.GetRequests()); {
	case n == 0:
		return nil, order.Fail(order.ReasonInvalidArgument, "requests", "requests is empty; give 1 to %d orders to check out", order.MaxBatchCheckout)
	case n > order.MaxBatchCheckout:
		return nil, order.Fail(order.ReasonInvalidArgument, "requests", "requests has %d orders; the limit is %d a call, so split them over several calls", n, order.MaxBatchCheckout)
	}
	results := make([]*pb.BatchCheckoutResult, len(req.GetRequests()))
	items := make([]order.CheckoutItem, 0, len(results))
	valid := make([]int, 0, len(results)) // the index in results of each item
	for i, r := range req.GetRequests() {
		it, err := s.checkoutItem(r)
		if err != nil {
			// The checks name the item's field ("ttl must be ..."): the
			// message says which item it is.
			var oe *order.Error
			if errors.As(err, &oe) {
				c := *oe
				c.Msg = fmt.Sprintf("requests[%d].%s", i, c.Msg)
				err = &c
			}
			results[i] = s.itemError(ctx, i, err)
			continue
		}
		items = append(items, it)
		valid = append(valid, i)
	}
	if len(items) > 0 {
		for j, r := range s.store.BatchCheckout(ctx, items) {
			i := valid[j]
			if r.Err != nil {
				results[i] = s.itemError(ctx, i, r.Err)
				continue
			}
			if r.Created && s.observer != nil {
				s.observer.CheckedOut()
			}
			results[i] = &pb.BatchCheckoutResult{Result: &pb.BatchCheckoutResult_Checkout{
				Checkout: &pb.CheckoutResponse{Order: toProto(r.Order), Created: r.Created},
			}}
		}
	}
	return &pb.BatchCheckoutResponse{Results: results}, nil
}

// itemError is the answer to item i of a BatchCheckout that failed with
// err: the status a Checkout of its own would have failed with, about the
// item's field (requests[i].ttl).
func (s *Service) itemError(ctx context.Context, i int, err error) *pb.BatchCheckoutResult {
	var oe *order.Error
	if errors.As(err, &oe) && oe.Field != "" {
		c := *oe
		c.Field = fmt.Sprintf("requests[%d].%s", i, c.Field)
		err = &c
	}
	return &pb.BatchCheckoutResult{Result: &pb.BatchCheckoutResult_Error{Error: s.statusOf(ctx, err).Proto()}}
}

// checkoutItem checks a checkout request against the limits, and returns
// what the store is to check out.
func (s *Service) checkoutItem(req *pb.CheckoutRequest) (order.CheckoutItem, error) {
	if err := order.ValidateID("order_id", req.GetOrderId()); err != nil {
		return order.CheckoutItem{}, err
	}
	if err := s.limits.ValidateMetadata(req.GetMetadata()); err != nil {
		return order.CheckoutItem{}, err
	}
	it := order.CheckoutItem{ID: req.GetOrderId(), Metadata: req.GetMetadata(), MaxTTL: s.limits.MaxTTL}
	if d := req.GetDeadline(); d != nil {
		if req.Ttl != nil {
			return order.CheckoutItem{}, order.Fail(order.ReasonInvalidArgument, "deadline", "give ttl or deadline, not both (got ttl %s and deadline %s)",
				order.FormatDuration(req.Ttl.AsDuration()), order.FormatTime(d.AsTime()))
		}
		at, err := deadlineOf(d)
		if err != nil {
			return order.CheckoutItem{}, err
		}
		it.At = at
		return it, nil
	}
	it.TTL = s.limits.DefaultTTL
	if req.Ttl != nil {
		ttl, err := s.ttlOf(req.Ttl)
		if err != nil {
			return order.CheckoutItem{}, err
		}
		it.TTL = ttl
	}
	return it, nil
}

// ttlOf reads the ttl given to a checkout, reschedule or bulk change: a
// duration within the limits.
func (s *Service) ttlOf(d *durationpb.Duration) (time.Duration, error) {
	if err := d.CheckValid(); err != nil {
		return 0, order.Fail(order.ReasonInvalidTTL, "ttl", "ttl is not a valid duration: %v", err)
	}
	return s.limits.CheckoutTTL(d.AsDuration(), true)
}

// deadlineOf reads a deadline field of a checkout, reschedule or bulk
// change: a valid timestamp after the Unix epoch, from which the stores
// count deadlines in milliseconds. Whether it is after now is the store's
// to say, by its clock.
func deadlineOf(ts *timestamppb.Timestamp) (time.Time, error) {
	if err := ts.CheckValid(); err != nil {
		return time.Time{}, order.Fail(order.ReasonInvalidDeadline, "deadline", "deadline is not a valid timestamp: %v", err)
	}
	at := ts.AsTime()
	if at.UnixMilli() <= 0 {
		return time.Time{}, order.Fail(order.ReasonInvalidDeadline, "deadline", "deadline %s is not after now; give a later one, or a ttl", order.FormatTime(at))
	}
	return at, nil
}

// GetOrder returns an order.
func (s *Service) GetOrder(ctx context.Context, req *pb.GetOrderRequest) (*pb.Order, error) {
	return s.byID(ctx, req, req.GetOrderId(), s.store.Get)
}

// CompleteOrder marks a pending order as paid.
func (s *Service) CompleteOrder(ctx context.Context, req *pb.CompleteOrderRequest) (*pb.Order, error) {
	return s.byID(ctx, req, req.GetOrderId(), s.observed(s.store.Complete))
}

// CancelOrder withdraws a pending order.
func (s *Service) CancelOrder(ctx context.Context, req *pb.CancelOrderRequest) (*pb.Order, error) {
	return s.byID(ctx, req, req.GetOrderId(), s.observed(s.store.Cancel))
}

// RescheduleOrder gives a pending order before its deadline a new one.
func (s *Service) RescheduleOrder(ctx context.Context, req *pb.RescheduleOrderRequest) (*pb.Order, error) {
	if err := order.ValidateID("order_id", req.GetOrderId()); err != nil {
		return nil, err
	}
	r := order.Reschedule{MaxTTL: s.limits.MaxTTL}
	switch nd := req.GetNewDeadline().(type) {
	case *pb.RescheduleOrderRequest_Ttl:
		ttl, err := s.ttlOf(nd.Ttl)
		if err != nil {
			return nil, err
		}
		r.TTL = ttl
	case *pb.RescheduleOrderRequest_Deadline:
		at, err := deadlineOf(nd.Deadline)
		if err != nil {
			return nil, err
		}
		r.At = at
	default:
		return nil, order.Fail(order.ReasonInvalidArgument, "new_deadline", "give the new deadline: ttl (from now) or deadline")
	}
	if e := req.GetExpectedDeadline(); e != nil {
		if err := e.CheckValid(); err != nil {
			return nil, order.Fail(order.ReasonInvalidDeadline, "expected_deadline", "expected_deadline is not a valid timestamp: %v", err)
		}
		r.Expected = e.AsTime()
	}
	o, err := s.store.Reschedule(ctx, req.GetOrderId(), r)
	if err != nil {
		return nil, err
	}
	return toProto(o), nil
}

// observed tells the Observer of the orders op closes.
func (s *Service) observed(op func(context.Context, string) (order.Order, error)) func(context.Context, string) (order.Order, error) {
	return func(ctx context.Context, id string) (order.Order, error) {
		o, err := op(ctx, id)
		if err == nil && s.observer != nil {
			s.observer.Closed(o.Status)
		}
		return o, err
	}
}

// byID serves a call on one order: req, whose order id is id.
func (s *Service) byID(ctx context.Context, req proto.Message, id string, op func(context.Context, string) (order.Order, error)) (*pb.Order, error) {
	if err := order.ValidateID("order_id", id); err != nil {
		return nil, err
	}
	o, err := op(ctx, id)
	if err != nil {
		return nil, err
	}
	return toProto(o), nil
}

// ResumeCursorTrailer is the trailer key that carries, when a watch ends
// with an error, the cursor to resume from.
const ResumeCursorTrailer = "resume-cursor"

// WatchExpirations streams expirations, replaying those after a cursor first.
// The response header is sent once the request is known to be valid, so
// that clients (and the REST gateway) learn at once that the watch is on.
func (s *Service) WatchExpirations(req *pb.WatchExpirationsRequest, stream pb.OrderService_WatchExpirationsServer) error {
	ctx := stream.Context()
	var after order.Cursor
	if req.GetAfterCursor() != "" {
		var err error
		if after, err = order.ParseCursor("after_cursor", req.GetAfterCursor()); err != nil {
			return err
		}
	}
	started := func() error { return stream.SendHeader(metadata.MD{}) }
	send := func(ev order.Event, live bool) error {
		// A live event goes to every watcher alike: it is encoded once for
		// all of them. A replayed one goes to this watcher only, and the
		// gateway's watchers, served in process, take the message as it is.
		if !s.preEncode || !live || inproc.InProcess(ctx) {
			return stream.Send(eventToProto(ev))
		}
		b, err := s.encoded.get(ev)
		if err != nil {
			return err
		}
		return stream.SendMsg(b)
	}
	last, err := s.hub.Follow(ctx, after, started, send)
	if err == nil || ctx.Err() != nil {
		return err
	}
	// A watcher that the log's retention overtook while it caught up (see
	// watch.Hub.Follow) learns how far it got, as one cut off for another
	// reason does.
	k := order.KindOf(err)
	behind := k == order.KindOutOfRange && errors.Is(err, watch.ErrLagged)
	if (k == order.KindResourceExhausted || k == order.KindUnavailable || behind) && (after != nil || last != nil) {
		stream.SetTrailer(metadata.Pairs(ResumeCursorTrailer, last.String()))
	}
	if k == order.KindInvalid || (k == order.KindOutOfRange && !behind) {
		// The check of the cursor (see watch.Hub.CheckCursor), which
		// names no field.
		return order.WithField(err, "after_cursor")
	}
	return err
}

func toProto(o order.Order) *pb.Order {
	p := &pb.Order{
		OrderId:     o.ID,
		Status:      statusToProto(o.Status),
		CreatedAt:   timestamppb.New(o.CreatedAt),
		Deadline:    timestamppb.New(o.Deadline),
		Metadata:    o.Metadata,
		Reschedules: int32(min(o.Reschedules, math.MaxInt32)),
	}
	if o.Status == order.StatusPending {
		p.TtlRemaining = durationpb.New(max(o.TTLRemaining, 0))
	} else {
		p.ClosedAt = timestamppb.New(o.ClosedAt)
	}
	return p
}

func statusToProto(s order.Status) pb.OrderStatus {
	switch s {
	case order.StatusPending:
		return pb.OrderStatus_ORDER_STATUS_PENDING
	case order.StatusExpired:
		return pb.OrderStatus_ORDER_STATUS_EXPIRED
	case order.StatusCompleted:
		return pb.OrderStatus_ORDER_STATUS_COMPLETED
	case order.StatusCancelled:
		return pb.OrderStatus_ORDER_STATUS_CANCELLED
	}
	return pb.OrderStatus_ORDER_STATUS_UNSPECIFIED
}

func eventToProto(ev order.Event) *pb.ExpirationEvent {
	return &pb.ExpirationEvent{
		Cursor:    ev.Cursor.String(),
		OrderId:   ev.OrderID,
		Deadline:  timestamppb.New(ev.Deadline),
		ExpiredAt: timestamppb.New(ev.ExpiredAt),
		Metadata:  ev.Metadata,
	}
}
