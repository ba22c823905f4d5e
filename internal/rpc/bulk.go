package rpc

import (
	"context"
	"strconv"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/code"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/orderexpiry/orderexpiry/internal/order"
	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// opPrefix starts an operation's resource name.
const opPrefix = "operations/"

// BulkChangeOrders starts a bulk operation.
func (s *Service) BulkChangeOrders(ctx context.Context, req *pb.BulkChangeOrdersRequest) (*pb.Operation, error) {
	c := order.BulkChange{MaxTTL: s.limits.MaxTTL}
	switch ch := req.GetChange().(type) {
	case *pb.BulkChangeOrdersRequest_Cancel:
		if !ch.Cancel {
			return nil, order.Fail(order.ReasonInvalidArgument, "cancel", "cancel is false; give cancel: true, or another change")
		}
		c.Cancel = true
	case *pb.BulkChangeOrdersRequest_Ttl:
		ttl, err := s.ttlOf(ch.Ttl)
		if err != nil {
			return nil, err
		}
		c.TTL = ttl
	case *pb.BulkChangeOrdersRequest_Deadline:
		at, err := deadlineOf(ch.Deadline)
		if err != nil {
			return nil, err
		}
		c.At = at
	case *pb.BulkChangeOrdersRequest_Shift:
		if err := ch.Shift.CheckValid(); err != nil {
			return nil, order.Fail(order.ReasonInvalidArgument, "shift", "shift is not a valid duration: %v", err)
		}
		c.Shift = ch.Shift.AsDuration()
		if c.Shift.Abs() < 1e6 {
			return nil, order.Fail(order.ReasonInvalidArgument, "shift", "shift must move deadlines by a millisecond or more, later or earlier (got %s)", order.FormatDuration(c.Shift))
		}
	}
	if err := order.ValidateBulkChange(c); err != nil {
		return nil, err
	}
	op, err := s.store.StartOperation(ctx, order.Operation{Filter: strings.TrimSpace(req.GetFilter()), Change: c, DryRun: req.GetDryRun()})
	if err != nil {
		return nil, err
	}
	s.log.InfoContext(ctx, "bulk operation started", "operation", op.ID, "filter", op.Filter, "change", c.String(), "dry_run", op.DryRun)
	return opToProto(op), nil
}

// opID reads the id out of an operation's name.
func opID(name string) (string, error) {
	id, ok := strings.CutPrefix(name, opPrefix)
	if !ok {
		return "", order.Fail(order.ReasonInvalidID, "name", "name %q is not an operation's name: give \"operations/<id>\", as BulkChangeOrders answered", order.Clip(name))
	}
	if err := order.ValidateID("name", id); err != nil {
		return "", err
	}
	return id, nil
}

// GetOperation returns a bulk operation.
func (s *Service) GetOperation(ctx context.Context, req *pb.GetOperationRequest) (*pb.Operation, error) {
	id, err := opID(req.GetName())
	if err != nil {
		return nil, err
	}
	op, err := s.store.GetOperation(ctx, id)
	if err != nil {
		return nil, err
	}
	return opToProto(op), nil
}

// CancelOperation asks a bulk operation to stop.
func (s *Service) CancelOperation(ctx context.Context, req *pb.CancelOperationRequest) (*pb.Operation, error) {
	id, err := opID(req.GetName())
	if err != nil {
		return nil, err
	}
	op, err := s.store.CancelOperation(ctx, id)
	if err != nil {
		return nil, err
	}
	return opToProto(op), nil
}

// ListOperations lists the bulk operations, newest first. The page token
// is the number of operations before the page: operations are few, and
// kept for the retention period.
func (s *Service) ListOperations(ctx context.Context, req *pb.ListOperationsRequest) (*pb.ListOperationsResponse, error) {
	size, err := pageSize(req.GetPageSize(), defaultPageSize)
	if err != nil {
		return nil, err
	}
	from := 0
	if t := req.GetPageToken(); t != "" {
		n, err := strconv.Atoi(t)
		if err != nil || n < 0 {
			return nil, order.BadPageToken(t)
		}
		from = n
	}
	ops, err := s.store.ListOperations(ctx)
	if err != nil {
		return nil, err
	}
	resp := &pb.ListOperationsResponse{}
	for i := from; i < len(ops) && i < from+size; i++ {
		resp.Operations = append(resp.Operations, opToProto(ops[i]))
	}
	if from+size < len(ops) {
		resp.NextPageToken = strconv.Itoa(from + size)
	}
	return resp, nil
}

var opStates = map[order.OpState]pb.BulkChangeState{
	order.OpRunning:   pb.BulkChangeState_BULK_CHANGE_STATE_RUNNING,
	order.OpSucceeded: pb.BulkChangeState_BULK_CHANGE_STATE_SUCCEEDED,
	order.OpCancelled: pb.BulkChangeState_BULK_CHANGE_STATE_CANCELLED,
	order.OpFailed:    pb.BulkChangeState_BULK_CHANGE_STATE_FAILED,
}

func opToProto(op order.Operation) *pb.Operation {
	req := &pb.BulkChangeOrdersRequest{Filter: op.Filter, DryRun: op.DryRun}
	c := op.Change
	switch {
	case c.Cancel:
		req.Change = &pb.BulkChangeOrdersRequest_Cancel{Cancel: true}
	case !c.At.IsZero():
		req.Change = &pb.BulkChangeOrdersRequest_Deadline{Deadline: timestamppb.New(c.At)}
	case c.Shift != 0:
		req.Change = &pb.BulkChangeOrdersRequest_Shift{Shift: durationpb.New(c.Shift)}
	default:
		req.Change = &pb.BulkChangeOrdersRequest_Ttl{Ttl: durationpb.New(c.TTL)}
	}
	md := &pb.BulkChangeMetadata{
		Request:    req,
		State:      opStates[op.State],
		Matched:    op.Progress.Matched,
		Changed:    op.Progress.Changed,
		Skipped:    op.Progress.Skipped,
		Failed:     op.Progress.Failed,
		CreateTime: timestamppb.New(op.Created),
		UpdateTime: timestamppb.New(op.Updated),
	}
	p := &pb.Operation{Name: opPrefix + op.ID, Metadata: md, Done: op.Done()}
	if op.Done() {
		md.EndTime = timestamppb.New(op.Ended)
	}
	switch op.State {
	case order.OpFailed:
		p.Error = &rpcstatus.Status{Code: int32(code.Code_INTERNAL), Message: op.Error}
	case order.OpCancelled:
		p.Error = &rpcstatus.Status{Code: int32(code.Code_CANCELLED), Message: "the operation was cancelled; the orders it changed before stay changed"}
	}
	return p
}
