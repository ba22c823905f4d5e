package e2e

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// TestStats checks GetStats over gRPC and REST on each store: the counts by
// status after orders are completed, cancelled and expired, the partition
// with its next deadline, a group's backlog, and the replica's watcher and
// lateness.
func TestStats(t *testing.T) {
	backends(t, func(t *testing.T, start func(t *testing.T) *server) {
		s := start(t)
		ctx := context.Background()
		before := time.Now()
		if _, err := s.Client.CreateConsumerGroup(ctx, &pb.CreateConsumerGroupRequest{GroupId: "g"}); err != nil {
			t.Fatal(err)
		}
		w := s.watch(t, "")
		var keep *pb.Order
		for _, id := range []string{"done", "dropped", "kept"} {
			resp, err := s.Client.Checkout(ctx, &pb.CheckoutRequest{OrderId: id, Ttl: ttl(time.Hour)})
			if err != nil {
				t.Fatal(err)
			}
			keep = resp.GetOrder()
		}
		if _, err := s.Client.CompleteOrder(ctx, &pb.CompleteOrderRequest{OrderId: "done"}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Client.CancelOrder(ctx, &pb.CancelOrderRequest{OrderId: "dropped"}); err != nil {
			t.Fatal(err)
		}
		for i := range 2 {
			if _, err := s.Client.Checkout(ctx, &pb.CheckoutRequest{OrderId: fmt.Sprint("gone-", i), Ttl: ttl(100 * time.Millisecond)}); err != nil {
				t.Fatal(err)
			}
		}
		w.collect(t, 2, 10*time.Second)

		st, err := s.Client.GetStats(ctx, &pb.GetStatsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		type counts struct{ Pending, Expired, Completed, Cancelled int64 }
		o := st.GetOrders()
		if got, want := (counts{o.GetPending(), o.GetExpired(), o.GetCompleted(), o.GetCancelled()}), (counts{1, 2, 1, 1}); got != want {
			t.Errorf("orders: %+v, want %+v", got, want)
		}
		if since := o.GetCountedSince().AsTime(); since.Before(before.Add(-time.Second)) || since.After(time.Now()) {
			t.Errorf("counted_since %v, want when the store was made, about %v", since, before)
		}
		if len(st.GetPartitions()) != 1 || st.GetPartitions()[0].GetPending() != 1 || st.GetPartitions()[0].GetEvents() != 2 ||
			!st.GetPartitions()[0].GetNextDeadline().AsTime().Equal(keep.GetDeadline().AsTime()) {
			t.Errorf("partitions %v, want one with 1 pending, 2 events and the next deadline %v", st.GetPartitions(), keep.GetDeadline().AsTime())
		}
		if gs := st.GetConsumerGroups(); len(gs) != 1 || gs[0].GetGroupId() != "g" || gs[0].GetBacklog() != 2 {
			t.Errorf("consumer groups %v, want g with a backlog of 2", gs)
		}
		lat := st.GetReplica().GetLateness()
		if st.GetReplica().GetWatchers() != 1 || lat.GetCount() != 2 || lat.GetP50() == nil || lat.GetMax().AsDuration() < lat.GetP50().AsDuration() {
			t.Errorf("replica %v, want 1 watcher and the lateness of 2 expirations", st.GetReplica())
		}

		// REST answers the same, as JSON.
		code, body := s.restCall(t, http.MethodGet, "/v1/stats", "")
		if code != http.StatusOK {
			t.Fatalf("GET /v1/stats: %d %v", code, body)
		}
		want := map[string]any{"pending": "1", "expired": "2", "completed": "1", "cancelled": "1"}
		got := map[string]any{}
		for k := range want {
			got[k] = field(body, "orders", k)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("GET /v1/stats orders (-want +got):\n%s", diff)
		}
		if g := field(body, "replica", "watchers"); g != float64(1) {
			t.Errorf("GET /v1/stats replica.watchers = %v, want 1", g)
		}
	})
}
