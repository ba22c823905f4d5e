package rpc

import (
	"context"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/orderexpiry/orderexpiry/internal/order"
	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// The settings a group gets when its creation leaves them out, and their
// bounds.
const (
	defaultAckDeadline   = 30 * time.Second
	minAckDeadline       = 100 * time.Millisecond
	maxAckDeadline       = 10 * time.Minute
	defaultMaxDeliveries = 5
	maxMaxDeliveries     = 100
)

// CreateConsumerGroup creates a group, or answers the one with the same
// settings.
func (s *Service) CreateConsumerGroup(ctx context.Context, req *pb.CreateConsumerGroupRequest) (*pb.ConsumerGroup, error) {
	g, err := s.groupSettings(req)
	if err != nil {
		return nil, err
	}
	var start order.Cursor
	if c := req.GetStartAfterCursor(); c != "" {
		p, err := order.ParseCursor("start_after_cursor", c)
		if err == nil {
			p, err = s.hub.CheckCursor(ctx, p)
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
		if _, err := order.ParseCursor("start_after_cursor", c); err != nil {
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
