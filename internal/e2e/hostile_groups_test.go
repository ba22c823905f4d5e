package e2e

// Hostile consumers of groups: a client that pulls under thousands of
// consumer names, and one that creates, uses and deletes groups over and
// over. Each checks, through the public ports, that what the server keeps
// (consumers in the store, series in /metrics) stays bounded.

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/orderexpiry/orderexpiry/internal/redistest"
	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// median times f n times and returns the median.
func median(n int, f func()) time.Duration {
	ds := make([]time.Duration, n)
	for i := range ds {
		start := time.Now()
		f()
		ds[i] = time.Since(start)
	}
	slices.Sort(ds)
	return ds[n/2]
}

// fillBacklog checks out n orders, prefix0 onwards, due a millisecond
// later, and waits until they are in group's backlog.
func fillBacklog(t *testing.T, s *server, group, prefix string, n int) {
	t.Helper()
	ctx := context.Background()
	for i := range n {
		if _, err := s.Client.Checkout(ctx, &pb.CheckoutRequest{OrderId: fmt.Sprint(prefix, i), Ttl: ttl(time.Millisecond)}); err != nil {
			t.Fatal(err)
		}
	}
	waitUntil(t, 30*time.Second, fmt.Sprintf("%d events in group %s's backlog", n, group), func() bool {
		g, err := s.Client.GetConsumerGroup(ctx, &pb.GetConsumerGroupRequest{GroupId: group})
		return err == nil && g.GetBacklog() >= int64(n)
	})
}

// TestHostileConsumerNames: 3,000 pulls under 3,000 consumer names, each
// acknowledging what it took, leave no consumer behind in Redis (the
// RESULT line shows what a pull, a state read and other clients'
// checkouts cost before and after; speed goals live in benchmarks); and
// names that hold deliveries are bounded by
// -max-group-consumers: past it a new name is refused with
// RESOURCE_EXHAUSTED naming the limit, and taken again once one settles.
func TestHostileConsumerNames(t *testing.T) {
	if testing.Short() {
		t.Skip("3,000 consumer names: skipped with -short")
	}
	t.Parallel()
	const names, limit = 3000, 50
	r := redistest.Start(t)
	s := startServer(t, map[string]string{"REDIS_URL": r.URL()}, "-max-group-consumers", strconv.Itoa(limit))
	rdb := r.Client(t)
	ctx := context.Background()
	if _, err := s.Client.CreateConsumerGroup(ctx, &pb.CreateConsumerGroupRequest{GroupId: "names", AckDeadline: durationpb.New(60 * time.Second)}); err != nil {
		t.Fatal(err)
	}
	pull := func(name string, max int32) ([]*pb.ReceivedExpiration, error) {
		resp, err := s.Client.PullExpirations(ctx, &pb.PullExpirationsRequest{GroupId: "names", Consumer: name, MaxEvents: max, Wait: durationpb.New(0)})
		return resp.GetReceivedExpirations(), err
	}
	// measure times a pull that finds nothing, a state read, and a
	// checkout while four clients pull under their own names.
	measure := func() (pullT, stateT, checkoutT time.Duration) {
		pullT = median(50, func() { _, _ = pull("probe", 1) })
		stateT = median(50, func() { _, _ = s.Client.GetConsumerGroup(ctx, &pb.GetConsumerGroupRequest{GroupId: "names"}) })
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for k := range 4 {
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
						_, _ = pull(fmt.Sprint("busy-", k), 1)
					}
				}
			})
		}
		i := 0
		checkoutT = median(50, func() {
			i++
			_, _ = s.Client.Checkout(ctx, &pb.CheckoutRequest{OrderId: fmt.Sprint("m-", time.Now().UnixNano(), "-", i), Ttl: ttl(time.Hour)})
		})
		close(stop)
		wg.Wait()
		return
	}
	pull0, state0, checkout0 := measure()

	fillBacklog(t, s, "names", "name-", names)
	attack := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for k := range 4 {
		wg.Go(func() {
			for i := k; i < names; i += 4 {
				ds, err := pull(fmt.Sprint("name-", i), 1)
				if err == nil && len(ds) > 0 {
					_, err = s.Client.AcknowledgeExpirations(ctx, &pb.AcknowledgeExpirationsRequest{GroupId: "names", AckIds: []string{ds[0].GetAckId()}})
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("pull or ack under a new name: %v", err)
	}
	took := time.Since(attack)
	consumers, err := rdb.XInfoConsumers(ctx, "oe:{0}:events", "names").Result()
	if err != nil {
		t.Fatal(err)
	}
	pull1, state1, checkout1 := measure()
	result(t, "names=%d attack_took=%s consumers_left=%d pull_empty=%s->%s group_state=%s->%s checkout_with_4_pullers=%s->%s",
		names, took.Round(time.Millisecond), len(consumers), pull0, pull1, state0, state1, checkout0, checkout1)
	if len(consumers) > 10 {
		t.Errorf("%d consumers left in Redis after %d names pulled and acknowledged; want only those holding deliveries (none)", len(consumers), names)
	}

	// Names that hold deliveries: up to the limit, then refused.
	fillBacklog(t, s, "names", "hold-", limit+10)
	var first *pb.ReceivedExpiration
	for i := range limit {
		ds, err := pull(fmt.Sprint("holder-", i), 1)
		if err != nil || len(ds) != 1 {
			t.Fatalf("holder %d: %d deliveries, %v; want 1", i, len(ds), err)
		}
		if i == 0 {
			first = ds[0]
		}
	}
	_, err = pull("one-too-many", 1)
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(status.Convert(err).Message(), "-max-group-consumers") {
		t.Fatalf("a new name past %d holding consumers: %v; want RESOURCE_EXHAUSTED naming -max-group-consumers", limit, err)
	}
	code, body := s.restCall(t, "POST", "/v1/groups/names:pull", `{"consumer":"one-too-many-rest","maxEvents":1,"wait":"0s"}`)
	if code != http.StatusTooManyRequests || !strings.Contains(fmt.Sprint(body), "-max-group-consumers") {
		t.Errorf("REST pull under a new name past the limit: %d %v; want 429 naming -max-group-consumers", code, body)
	}
	if ds, err := pull("holder-1", 1); err != nil || len(ds) != 1 {
		t.Errorf("a holding consumer pulls again: %d deliveries, %v; want 1", len(ds), err)
	}
	if _, err := s.Client.AcknowledgeExpirations(ctx, &pb.AcknowledgeExpirationsRequest{GroupId: "names", AckIds: []string{first.GetAckId()}}); err != nil {
		t.Fatal(err)
	}
	if ds, err := pull("one-too-many", 1); err != nil || len(ds) != 1 {
		t.Errorf("a new name once a holder settled: %d deliveries, %v; want 1", len(ds), err)
	}
}

// TestHostileConsumerNamesMemory: the memory store bounds the names that
// hold deliveries of a group by the same flag.
func TestHostileConsumerNamesMemory(t *testing.T) {
	t.Parallel()
	const limit = 5
	s := startServer(t, nil, "-max-group-consumers", strconv.Itoa(limit))
	ctx := context.Background()
	if _, err := s.Client.CreateConsumerGroup(ctx, &pb.CreateConsumerGroupRequest{GroupId: "names", AckDeadline: durationpb.New(60 * time.Second)}); err != nil {
		t.Fatal(err)
	}
	fillBacklog(t, s, "names", "hold-", limit+2)
	var held []string
	for i := range limit {
		resp, err := s.Client.PullExpirations(ctx, &pb.PullExpirationsRequest{GroupId: "names", Consumer: fmt.Sprint("holder-", i), MaxEvents: 1})
		if err != nil || len(resp.GetReceivedExpirations()) != 1 {
			t.Fatalf("holder %d: %v, %v", i, resp, err)
		}
		held = append(held, resp.GetReceivedExpirations()[0].GetAckId())
	}
	_, err := s.Client.PullExpirations(ctx, &pb.PullExpirationsRequest{GroupId: "names", Consumer: "one-too-many", MaxEvents: 1})
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(status.Convert(err).Message(), "-max-group-consumers") {
		t.Fatalf("a new name past %d holding consumers: %v; want RESOURCE_EXHAUSTED naming -max-group-consumers", limit, err)
	}
	if _, err := s.Client.AcknowledgeExpirations(ctx, &pb.AcknowledgeExpirationsRequest{GroupId: "names", AckIds: held[:1]}); err != nil {
		t.Fatal(err)
	}
	if resp, err := s.Client.PullExpirations(ctx, &pb.PullExpirationsRequest{GroupId: "names", Consumer: "one-too-many", MaxEvents: 1}); err != nil || len(resp.GetReceivedExpirations()) != 1 {
		t.Errorf("a new name once a holder settled: %v, %v; want 1 delivery", resp, err)
	}
}

// TestHostileGroupCycling: creating, using and deleting groups over and
// over leaves /metrics where it started: a deleted group's series go with
// it.
func TestHostileGroupCycling(t *testing.T) {
	if testing.Short() {
		t.Skip("3,000 group cycles: skipped with -short")
	}
	t.Parallel()
	const cycles = 3000
	s := startProcess(t, nil)
	ctx := context.Background()
	metricsBytes := func() (int, int) {
		code, _, body := httpCall(t, s.HTTP, "GET", s.URL("/metrics"), "", "")
		if code != http.StatusOK {
			t.Fatalf("/metrics: %d", code)
		}
		n := 0
		for _, line := range strings.Split(string(body), "\n") {
			if strings.Contains(line, `group="`) {
				n++
			}
		}
		return len(body), n
	}
	cycle := func(id string) {
		if _, err := s.Client.CreateConsumerGroup(ctx, &pb.CreateConsumerGroupRequest{GroupId: id, AckDeadline: durationpb.New(10 * time.Second)}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Client.Checkout(ctx, &pb.CheckoutRequest{OrderId: id, Ttl: ttl(time.Millisecond)}); err != nil {
			t.Fatal(err)
		}
		resp, err := s.Client.PullExpirations(ctx, &pb.PullExpirationsRequest{GroupId: id, MaxEvents: 1, Wait: durationpb.New(5 * time.Second)})
		if err != nil || len(resp.GetReceivedExpirations()) != 1 {
			t.Fatalf("pull of %s: %v, %v", id, resp, err)
		}
		if _, err := s.Client.AcknowledgeExpirations(ctx, &pb.AcknowledgeExpirationsRequest{GroupId: id, AckIds: []string{resp.GetReceivedExpirations()[0].GetAckId()}}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Client.DeleteConsumerGroup(ctx, &pb.DeleteConsumerGroupRequest{GroupId: id}); err != nil {
			t.Fatal(err)
		}
	}
	// One cycle first, so that what every first use allocates is counted
	// in the start.
	cycle("cycle-warm")
	size0, series0 := metricsBytes()
	rss0 := s.procStatus(t, "VmRSS")
	for i := range cycles {
		cycle(fmt.Sprint("cycle-", i))
	}
	size1, series1 := metricsBytes()
	rss1 := s.procStatus(t, "VmRSS")
	result(t, "cycles=%d metrics_bytes=%d->%d group_series=%d->%d rss_mb=%d->%d", cycles, size0, size1, series0, series1, rss0>>10, rss1>>10)
	if series1 != 0 || size1 > size0+2048 {
		t.Errorf("after %d groups created, used and deleted: %d series with a group label (want 0), /metrics %d bytes (%d at the start)", cycles, series1, size1, size0)
	}
}
