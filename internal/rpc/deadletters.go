package rpc

import (
	"context"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/orderexpiry/orderexpiry/internal/order"
	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

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
		resp.DeadLetters = append(resp.DeadLetters, &pb.DeadLetter{DeadLetterId: l.ID.String(), DeliveryAttempts: int32(l.Attempts), Event: ev,
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
		if _, ok := order.ParseEventID(id); !ok {
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

// timestampOrNil is t as a timestamp, or nil (unset) for the zero time.
func timestampOrNil(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}
