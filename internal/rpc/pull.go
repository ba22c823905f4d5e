package rpc

import (
	"context"
	"time"

	"github.com/orderexpiry/orderexpiry/internal/order"
	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// How long a pull waits for a first delivery when the request leaves it
// out, and the most it may ask for.
const (
	defaultPullWait = 10 * time.Second
	maxPullWait     = time.Minute
)

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
