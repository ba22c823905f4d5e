package e2e

import (
	"context"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/orderexpiry/orderexpiry/internal/redistest"
	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// batchCheckout checks out orders a batch of 1,000 at a time, each due
// after ttl(i), with metadata md.
func batchCheckout(t *testing.T, s *server, ids []string, ttl func(i int) time.Duration, md map[string]string) {
	t.Helper()
	for from := 0; from < len(ids); from += 1000 {
		req := &pb.BatchCheckoutRequest{}
		for i := from; i < min(from+1000, len(ids)); i++ {
			req.Requests = append(req.Requests, &pb.CheckoutRequest{OrderId: ids[i], Ttl: durationpb.New(ttl(i)), Metadata: md})
		}
		resp, err := s.Client.BatchCheckout(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range resp.GetResults() {
			if !r.GetCheckout().GetCreated() {
				t.Fatalf("checkout of %s: %v", req.Requests[i].GetOrderId(), r)
			}
		}
	}
}

// waitOperation polls an operation until it is done.
func waitOperation(t *testing.T, s *server, name string, within time.Duration) *pb.Operation {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		op, err := s.Client.GetOperation(context.Background(), &pb.GetOperationRequest{Name: name})
		if err != nil {
			t.Fatal(err)
		}
		if op.GetDone() {
			return op
		}
		if time.Now().After(deadline) {
			t.Fatalf("operation %s not done after %s: %v", name, within, op.GetMetadata())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestBulkOperations: through both ports and both stores, a dry run
// counts, a bulk shift moves each matching order once and no other, a bulk
// cancel cancels, and the operations are listed; bad requests are refused
// with what to fix.
func TestBulkOperations(t *testing.T) {
	backends(t, func(t *testing.T, start func(t *testing.T) *server) {
		s := start(t)
		ctx := context.Background()
		batchCheckout(t, s, ids("m1-", 300), func(int) time.Duration { return time.Hour }, map[string]string{"merchant": "m-1"})
		batchCheckout(t, s, ids("m2-", 100), func(int) time.Duration { return time.Hour }, map[string]string{"merchant": "m-2"})

		code, body := s.restCall(t, "POST", "/v1/orders:bulkChange", `{"filter":"metadata.merchant = \"m-1\"","shift":"1200s","dryRun":true}`)
		if code != 200 {
			t.Fatalf("REST dry run: %d %v", code, body)
		}
		name, _ := body["name"].(string)
		dry := waitOperation(t, s, name, 10*time.Second)
		if m := dry.GetMetadata(); m.GetMatched() != 300 || m.GetChanged() != 0 || m.GetState() != pb.BulkChangeState_BULK_CHANGE_STATE_SUCCEEDED {
			t.Errorf("dry run: %v, want 300 matched, nothing changed", m)
		}
		before, err := s.Client.GetOrder(ctx, &pb.GetOrderRequest{OrderId: "m1-7"})
		if err != nil {
			t.Fatal(err)
		}
		op, err := s.Client.BulkChangeOrders(ctx, &pb.BulkChangeOrdersRequest{Filter: `metadata.merchant = "m-1"`, Change: &pb.BulkChangeOrdersRequest_Shift{Shift: durationpb.New(20 * time.Minute)}})
		if err != nil {
			t.Fatal(err)
		}
		done := waitOperation(t, s, op.GetName(), 10*time.Second)
		if m := done.GetMetadata(); m.GetMatched() != 300 || m.GetChanged() != 300 || m.GetEndTime() == nil {
			t.Errorf("shift: %v, want 300 matched and changed", m)
		}
		after, _ := s.Client.GetOrder(ctx, &pb.GetOrderRequest{OrderId: "m1-7"})
		if got := after.GetDeadline().AsTime().Sub(before.GetDeadline().AsTime()); got != 20*time.Minute || after.GetReschedules() != 1 {
			t.Errorf("m1-7 moved by %s, %d reschedules; want 20m once", got, after.GetReschedules())
		}
		other, _ := s.Client.GetOrder(ctx, &pb.GetOrderRequest{OrderId: "m2-7"})
		if other.GetReschedules() != 0 {
			t.Errorf("m2-7 of another merchant was rescheduled")
		}
		cancel, err := s.Client.BulkChangeOrders(ctx, &pb.BulkChangeOrdersRequest{Filter: `metadata.merchant = "m-2"`, Change: &pb.BulkChangeOrdersRequest_Cancel{Cancel: true}})
		if err != nil {
			t.Fatal(err)
		}
		if m := waitOperation(t, s, cancel.GetName(), 10*time.Second).GetMetadata(); m.GetChanged() != 100 {
			t.Errorf("cancel: %v, want 100 changed", m)
		}
		if o, _ := s.Client.GetOrder(ctx, &pb.GetOrderRequest{OrderId: "m2-7"}); o.GetStatus() != pb.OrderStatus_ORDER_STATUS_CANCELLED {
			t.Errorf("m2-7 after the bulk cancel: %v", o.GetStatus())
		}
		code, body = s.restCall(t, "GET", "/v1/operations", "")
		if ops, _ := body["operations"].([]any); code != 200 || len(ops) != 3 {
			t.Errorf("REST ListOperations: %d %v, want 3 operations", code, body)
		}
		code, body = s.restCall(t, "GET", "/v1/operations?pageSize=2", "")
		if ops, _ := body["operations"].([]any); code != 200 || len(ops) != 2 || body["nextPageToken"] != "2" {
			t.Errorf("REST ListOperations with pageSize=2: %d %v, want 2 operations and a next page", code, body)
		}
		code, body = s.restCall(t, "GET", "/v1/operations?pageSize=1001", "")
		if msg, _ := body["message"].(string); code != 400 || !strings.Contains(msg, "page_size 1001 is out of range: give 1 to 1000, or 0 for 50") {
			t.Errorf("REST ListOperations with pageSize=1001: %d %v, want 400 saying the range", code, body)
		}
		code, body = s.restCall(t, "GET", "/v1/operations?pageToken=x", "")
		if msg, _ := body["message"].(string); code != 400 || !strings.Contains(msg, `page_token "x" is not a page token of this list`) {
			t.Errorf("REST ListOperations with pageToken=x: %d %v, want 400 saying it is no page token", code, body)
		}
		code, body = s.restCall(t, "GET", "/v1/"+cancel.GetName(), "")
		if md, _ := body["metadata"].(map[string]any); code != 200 || md["changed"] != "100" {
			t.Errorf("REST GetOperation: %d %v", code, body)
		}

		for _, tc := range []struct {
			name, body string
			code       int
			says       string
		}{
			{"no change", `{"filter":"status = PENDING"}`, 400, "give the change"},
			{"bad filter", `{"filter":"metadata.merchant = ","cancel":true}`, 400, "column"},
			{"zero ttl", `{"ttl":"0s"}`, 400, "ttl must be more than zero"},
			{"cancel false", `{"cancel":false}`, 400, "cancel is false"},
		} {
			code, body := s.restCall(t, "POST", "/v1/orders:bulkChange", tc.body)
			if code != tc.code || !strings.Contains(strings.ToLower(body["message"].(string)), tc.says) {
				t.Errorf("%s: %d %v, want %d saying %q", tc.name, code, body, tc.code, tc.says)
			}
		}
		_, err = s.Client.GetOperation(ctx, &pb.GetOperationRequest{Name: "operations/nope"})
		wantCode(t, err, codes.NotFound)
		_, err = s.Client.GetOperation(ctx, &pb.GetOperationRequest{Name: "nope"})
		wantCode(t, err, codes.InvalidArgument)
	})
}

// TestBulkRescheduleSurvivesKill: a bulk shift of 20,000 orders, half of
// them due while it runs, started on one of two replicas, which is killed
// with SIGKILL in the middle: the other finishes it. Each order ends
// rescheduled once (by exactly the shift) or expired once (one event), and
// the operation's counts add up to what happened.
func TestBulkRescheduleSurvivesKill(t *testing.T) {
	if testing.Short() {
		t.Skip("20,000 orders and a killed replica: not in -short")
	}
	r := redistest.Start(t)
	env := map[string]string{"REDIS_URL": r.URL()}
	a, b := startProcess(t, env), startProcess(t, env)
	f := follow(t, func() *server { return b }, "0-0")
	const n = 20000
	all := ids("bk-", n)
	// Even orders are due an hour away; odd ones from 1.5 s after their
	// checkout on, spread over 4 s: while the operation runs, and while it
	// waits for the survivor to take it over. (Counted from a fixed start,
	// the first ttls were negative when the 20 batches took longer than
	// 1.5 s on a busy machine.)
	ttlOf := func(i int) time.Duration {
		if i%2 == 0 {
			return time.Hour
		}
		return 1500*time.Millisecond + time.Duration(i)*4*time.Second/n
	}
	batchCheckout(t, b, all, ttlOf, map[string]string{"merchant": "m-9"})
	loaded := time.Now() // every odd order is due within 5.5 s of it
	batchCheckout(t, b, ids("bk-other-", 50), func(int) time.Duration { return time.Hour }, map[string]string{"merchant": "m-1"})
	deadlines := make(map[string]time.Time, n)
	for _, id := range []string{"bk-0", "bk-2"} {
		o, err := b.Client.GetOrder(context.Background(), &pb.GetOrderRequest{OrderId: id})
		if err != nil {
			t.Fatal(err)
		}
		deadlines[id] = o.GetDeadline().AsTime()
	}

	const shift = 30 * time.Minute
	op, err := a.Client.BulkChangeOrders(context.Background(), &pb.BulkChangeOrdersRequest{
		Filter: `metadata.merchant = "m-9"`,
		Change: &pb.BulkChangeOrdersRequest_Shift{Shift: durationpb.New(shift)},
	})
	if err != nil {
		t.Fatal(err)
	}
	// Kill the replica that started it once it has changed some orders.
	var atKill *pb.BulkChangeMetadata
	for {
		got, err := b.Client.GetOperation(context.Background(), &pb.GetOperationRequest{Name: op.GetName()})
		if err != nil {
			t.Fatal(err)
		}
		if got.GetDone() {
			t.Fatalf("the operation ended before the kill: %v", got.GetMetadata())
		}
		if got.GetMetadata().GetChanged() > 500 {
			atKill = got.GetMetadata()
			break
		}
		time.Sleep(2 * time.Millisecond)
	}
	if !a.Stop(syscall.SIGKILL) {
		t.Fatal("replica a did not die")
	}
	done := waitOperation(t, b, op.GetName(), 60*time.Second)
	m := done.GetMetadata()
	if m.GetState() != pb.BulkChangeState_BULK_CHANGE_STATE_SUCCEEDED {
		t.Fatalf("operation: %v", m)
	}
	// Let every order still due in the window expire, then look.
	time.Sleep(time.Until(loaded.Add(7 * time.Second)))
	events := map[string]int{}
	for _, ev := range f.received() {
		events[ev.GetOrderId()]++
	}
	var rescheduled, expired int64
	for i, id := range all {
		o, err := b.Client.GetOrder(context.Background(), &pb.GetOrderRequest{OrderId: id})
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case o.GetStatus() == pb.OrderStatus_ORDER_STATUS_PENDING && o.GetReschedules() == 1:
			rescheduled++
			if d, ok := deadlines[id]; ok && !o.GetDeadline().AsTime().Equal(d.Add(shift)) {
				t.Errorf("%s due %v, want %v: shifted once", id, o.GetDeadline().AsTime(), d.Add(shift))
			}
			if events[id] != 0 {
				t.Errorf("%s rescheduled and expired", id)
			}
		case o.GetStatus() == pb.OrderStatus_ORDER_STATUS_EXPIRED && o.GetReschedules() == 0:
			expired++
			if i%2 == 0 {
				t.Errorf("%s, due in an hour, expired", id)
			}
		default:
			t.Errorf("%s: %v with %d reschedules; want rescheduled once or expired", id, o.GetStatus(), o.GetReschedules())
		}
		if o.GetStatus() == pb.OrderStatus_ORDER_STATUS_EXPIRED && events[id] != 1 {
			t.Errorf("%s: %d expiry events, want 1", id, events[id])
		}
	}
	// The orders the scan did not match had expired before it came to them.
	if m.GetChanged() != rescheduled || m.GetFailed() != 0 || m.GetMatched() != m.GetChanged()+m.GetSkipped() || m.GetMatched() > n || n-m.GetMatched() > expired {
		t.Errorf("counts %v do not add up to %d rescheduled, %d expired", m, rescheduled, expired)
	}
	if rescheduled+expired != n || rescheduled < n/2 {
		t.Errorf("%d rescheduled + %d expired, want %d with every order due in an hour rescheduled", rescheduled, expired, n)
	}
	// The odd orders, due while it ran, must have raced the shift: some
	// shifted, some expired first.
	if expired == 0 || rescheduled == n/2 {
		t.Errorf("of the %d orders due while the operation ran, %d were shifted and %d expired: the shift did not race their expiry, and the test proves little", n/2, rescheduled-n/2, expired)
	}
	o, _ := b.Client.GetOrder(context.Background(), &pb.GetOrderRequest{OrderId: "bk-other-3"})
	if o.GetReschedules() != 0 {
		t.Errorf("an order of another merchant was rescheduled")
	}
	result(t, "matched=%d changed=%d skipped=%d at_kill_changed=%d rescheduled=%d expired=%d took=%s",
		m.GetMatched(), m.GetChanged(), m.GetSkipped(), atKill.GetChanged(), rescheduled, expired,
		m.GetEndTime().AsTime().Sub(m.GetCreateTime().AsTime()).Round(time.Millisecond))
}
