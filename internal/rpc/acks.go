package rpc

import (
	"context"
	"time"

	"github.com/orderexpiry/orderexpiry/internal/order"
	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// maxAckIDs bounds the ack ids of an ack or a nack, and the dead letter
// ids of a redrive.
const maxAckIDs = 1000

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
				s.observer.Acknowledged(group, now.Sub(time.UnixMilli(int64(ids[j].Offset.Ms))))
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
