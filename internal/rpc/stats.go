package rpc

import (
	"context"
	"math"
	"slices"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/orderexpiry/orderexpiry/internal/order"
	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// GetStats returns the orders by status, the partitions, the consumer
// groups and what this replica serves.
func (s *Service) GetStats(ctx context.Context, req *pb.GetStatsRequest) (*pb.Stats, error) {
	st, err := s.store.Stats(ctx)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	resp := &pb.Stats{
		Orders: &pb.OrderCounts{
			Pending:   st.Pending,
			Expired:   st.Expired,
			Completed: st.Completed,
			Cancelled: st.Cancelled,
		},
		Replica:  &pb.ReplicaStats{Watchers: int32(s.hub.Watchers())},
		ReadTime: timestamppb.New(now),
	}
	if !st.Since.IsZero() {
		resp.Orders.CountedSince = timestamppb.New(st.Since)
	}
	for i, p := range st.Partitions {
		ps := &pb.PartitionStats{Partition: int32(i), Pending: p.Pending, Events: p.Events}
		if !p.NextDeadline.IsZero() {
			ps.NextDeadline = timestamppb.New(p.NextDeadline)
		}
		resp.Partitions = append(resp.Partitions, ps)
	}
	groups, err := s.store.Groups(ctx)
	if err != nil {
		return nil, err
	}
	for _, g := range groups {
		g, gs, err := s.store.Group(ctx, g.ID)
		if order.KindOf(err) == order.KindNotFound {
			continue // deleted meanwhile
		}
		if err != nil {
			return nil, err
		}
		resp.ConsumerGroups = append(resp.ConsumerGroups, groupToProto(g, gs))
	}
	if s.lateness != nil {
		resp.Replica.Lateness = s.lateness.summary(now)
	}
	return resp, nil
}

// latenessSamples bounds the expirations a Lateness keeps.
const latenessSamples = 4096

// Lateness keeps the lateness of the last expirations published to this
// replica's watchers, for GetStats: at most latenessSamples of them, none
// older than its window.
type Lateness struct {
	window time.Duration

	mu sync.Mutex
	// ring holds the samples, next the index the next one goes to, full
	// whether the ring has gone round once.
	ring []latenessSample
	next int
	full bool
}

type latenessSample struct {
	at   time.Time
	late time.Duration
}

// NewLateness returns a Lateness that summarizes the last window.
func NewLateness(window time.Duration) *Lateness {
	return &Lateness{window: window, ring: make([]latenessSample, latenessSamples)}
}

// Observe records an event published to the watchers at a time; it fits
// watch.Options.OnPublish.
func (l *Lateness) Observe(ev order.Event, at time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ring[l.next] = latenessSample{at: at, late: max(at.Sub(ev.Deadline), 0)}
	l.next = (l.next + 1) % len(l.ring)
	l.full = l.full || l.next == 0
}

// summary summarizes the samples of the window before now.
func (l *Lateness) summary(now time.Time) *pb.LatenessSummary {
	l.mu.Lock()
	n := l.next
	if l.full {
		n = len(l.ring)
	}
	late := make([]time.Duration, 0, n)
	for _, s := range l.ring[:n] {
		if now.Sub(s.at) <= l.window {
			late = append(late, s.late)
		}
	}
	l.mu.Unlock()
	out := &pb.LatenessSummary{Window: durationpb.New(l.window), Count: int64(len(late))}
	if len(late) == 0 {
		return out
	}
	slices.Sort(late)
	// The nearest rank: the smallest sample that at least q of them do not
	// exceed.
	rank := func(q float64) time.Duration {
		i := int(math.Ceil(q*float64(len(late)))) - 1
		return late[min(max(i, 0), len(late)-1)]
	}
	out.P50 = durationpb.New(rank(0.50))
	out.P99 = durationpb.New(rank(0.99))
	out.Max = durationpb.New(late[len(late)-1])
	return out
}
