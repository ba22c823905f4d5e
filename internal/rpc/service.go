// Package rpc is the gRPC face of the service: it checks requests, calls the
// store and translates between protobuf messages and the domain, and
// between domain errors and status codes, in this one place.
package rpc

import (
	"context"
	"log/slog"
	"time"

	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/orderexpiry/orderexpiry/internal/gen/orderexpiry/v1"
	"github.com/orderexpiry/orderexpiry/internal/order"
	"github.com/orderexpiry/orderexpiry/internal/watch"
)

// Store is what the service needs of an order store.
type Store interface {
	Checkout(ctx context.Context, id string, ttl time.Duration, md map[string]string) (order.Order, bool, error)
	Get(ctx context.Context, id string) (order.Order, error)
	Complete(ctx context.Context, id string) (order.Order, error)
	Cancel(ctx context.Context, id string) (order.Order, error)
}

// Observer hears of the orders calls create and close, for metrics.
type Observer interface {
	CheckedOut()
	Closed(order.Status)
}

// Service implements orderexpiry.v1.OrderService.
type Service struct {
	pb.UnimplementedOrderServiceServer

	// Observer, when set before serving, hears of each order created,
	// completed or cancelled.
	Observer Observer
	// preEncode sends events in the wire form shared by all watchers; it
	// needs the server to use Codec.
	preEncode bool

	store   Store
	hub     *watch.Hub
	limits  order.Limits
	log     *slog.Logger
	encoded *encodedEvents
}

// New returns the service over a store and the hub that fans out its log.
func New(store Store, hub *watch.Hub, limits order.Limits, log *slog.Logger) *Service {
	return &Service{store: store, hub: hub, limits: limits, log: log, encoded: newEncodedEvents(4096)}
}

// Checkout creates a pending order, or returns the one already pending.
func (s *Service) Checkout(ctx context.Context, req *pb.CheckoutRequest) (*pb.CheckoutResponse, error) {
	if err := malformed(req); err != nil {
		return nil, s.status(ctx, err)
	}
	if err := order.ValidateID("order_id", req.GetOrderId()); err != nil {
		return nil, s.status(ctx, err)
	}
	var ttl time.Duration
	if req.Ttl != nil {
		if err := req.Ttl.CheckValid(); err != nil {
			return nil, s.status(ctx, order.Errorf(order.KindInvalid, "ttl is not a valid duration: %v", err))
		}
		ttl = req.Ttl.AsDuration()
	}
	ttl, err := s.limits.CheckoutTTL(ttl, req.Ttl != nil)
	if err != nil {
		return nil, s.status(ctx, err)
	}
	if err := s.limits.ValidateMetadata(req.GetMetadata()); err != nil {
		return nil, s.status(ctx, err)
	}
	o, created, err := s.store.Checkout(ctx, req.GetOrderId(), ttl, req.GetMetadata())
	if err != nil {
		return nil, s.status(ctx, err)
	}
	if created && s.Observer != nil {
		s.Observer.CheckedOut()
	}
	return &pb.CheckoutResponse{Order: toProto(o), Created: created}, nil
}

// UseCodec tells the service that its server was given Codec
// (grpc.ForceServerCodecV2), so that it can send each event encoded once.
func (s *Service) UseCodec() { s.preEncode = true }

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

// observed tells the Observer of the orders op closes.
func (s *Service) observed(op func(context.Context, string) (order.Order, error)) func(context.Context, string) (order.Order, error) {
	return func(ctx context.Context, id string) (order.Order, error) {
		o, err := op(ctx, id)
		if err == nil && s.Observer != nil {
			s.Observer.Closed(o.Status)
		}
		return o, err
	}
}

// byID serves a call on one order: req, whose order id is id.
func (s *Service) byID(ctx context.Context, req proto.Message, id string, op func(context.Context, string) (order.Order, error)) (*pb.Order, error) {
	if err := malformed(req); err != nil {
		return nil, s.status(ctx, err)
	}
	if err := order.ValidateID("order_id", id); err != nil {
		return nil, s.status(ctx, err)
	}
	o, err := op(ctx, id)
	if err != nil {
		return nil, s.status(ctx, err)
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
	if err := malformed(req); err != nil {
		return s.status(ctx, err)
	}
	var after order.Position
	if req.GetAfterCursor() != "" {
		var err error
		if after, err = order.ParsePosition(req.GetAfterCursor()); err != nil {
			return s.status(ctx, err)
		}
	}
	started := func() error { return stream.SendHeader(metadata.MD{}) }
	send := func(ev order.Event, live bool) error {
		// A live event goes to every watcher alike: it is encoded once for
		// all of them. A replayed one goes to this watcher only.
		if !s.preEncode || !live {
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
		return s.status(ctx, err)
	}
	if k := order.KindOf(err); (k == order.KindResourceExhausted || k == order.KindUnavailable) && (after != nil || last != nil) {
		stream.SetTrailer(metadata.Pairs(ResumeCursorTrailer, last.String()))
	}
	return s.status(ctx, err)
}

func toProto(o order.Order) *pb.Order {
	p := &pb.Order{
		OrderId:   o.ID,
		Status:    statusToProto(o.Status),
		CreatedAt: timestamppb.New(o.CreatedAt),
		Deadline:  timestamppb.New(o.Deadline),
		Metadata:  o.Metadata,
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
		Cursor:    ev.Position.String(),
		OrderId:   ev.OrderID,
		Deadline:  timestamppb.New(ev.Deadline),
		ExpiredAt: timestamppb.New(ev.ExpiredAt),
		Metadata:  ev.Metadata,
	}
}
