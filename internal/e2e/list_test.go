package e2e

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/orderexpiry/orderexpiry/internal/storetest"
	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// TestListOrders lists orders through both ports: every page in deadline
// order, each order once, filters on status, deadline, metadata and id
// prefix, and bad filters, order_by and page tokens answered as such.
func TestListOrders(t *testing.T) {
	backends(t, func(t *testing.T, start func(t *testing.T) *server) {
		s := start(t)
		ctx := t.Context()
		var reqs []*pb.CheckoutRequest
		for i := range 300 {
			reqs = append(reqs, &pb.CheckoutRequest{
				OrderId:  fmt.Sprintf("%s-%03d", []string{"shop", "app"}[i%2], i),
				Ttl:      ttl(time.Hour + time.Duration(i%50)*time.Second),
				Metadata: map[string]string{"merchant": fmt.Sprintf("m-%d", i%3)},
			})
		}
		if _, err := s.Client.BatchCheckout(ctx, &pb.BatchCheckoutRequest{Requests: reqs}); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 300; i += 30 {
			if _, err := s.Client.CompleteOrder(ctx, &pb.CompleteOrderRequest{OrderId: reqs[i].OrderId}); err != nil {
				t.Fatal(err)
			}
		}

		// gRPC: every order once, in deadline order.
		listGRPC := func(filter, orderBy string, size int32) []*pb.Order {
			t.Helper()
			var out []*pb.Order
			token := ""
			for pages := 0; ; pages++ {
				if pages > 400 {
					t.Fatalf("ListOrders(%q): no last page after %d pages", filter, pages)
				}
				resp, err := s.Client.ListOrders(ctx, &pb.ListOrdersRequest{Filter: filter, OrderBy: orderBy, PageSize: size, PageToken: token})
				if err != nil {
					t.Fatalf("ListOrders(%q): %v", filter, err)
				}
				out = append(out, resp.GetOrders()...)
				if token = resp.GetNextPageToken(); token == "" {
					return out
				}
			}
		}
		all := listGRPC("", "", 40)
		seen := map[string]bool{}
		for i, o := range all {
			if seen[o.GetOrderId()] {
				t.Fatalf("%s listed twice", o.GetOrderId())
			}
			seen[o.GetOrderId()] = true
			if i > 0 && o.GetDeadline().AsTime().Before(all[i-1].GetDeadline().AsTime()) {
				t.Fatalf("%s listed after %s, whose deadline is later", o.GetOrderId(), all[i-1].GetOrderId())
			}
		}
		if len(all) != 300 {
			t.Fatalf("listed %d orders, want 300", len(all))
		}
		desc := listGRPC("", "deadline desc", 1000)
		if len(desc) != 300 || desc[0].GetOrderId() != all[299].GetOrderId() || desc[299].GetOrderId() != all[0].GetOrderId() {
			t.Errorf("deadline desc: %d orders, first %s last %s", len(desc), desc[0].GetOrderId(), desc[len(desc)-1].GetOrderId())
		}
		mid := all[150].GetDeadline().AsTime().Format(time.RFC3339Nano)
		for _, tc := range []struct {
			filter string
			want   func(o *pb.Order) bool
		}{
			{"status = PENDING", func(o *pb.Order) bool { return o.GetStatus() == pb.OrderStatus_ORDER_STATUS_PENDING }},
			{"status = COMPLETED", func(o *pb.Order) bool { return o.GetStatus() == pb.OrderStatus_ORDER_STATUS_COMPLETED }},
			{`metadata.merchant = "m-1" AND status = PENDING`, func(o *pb.Order) bool {
				return o.GetMetadata()["merchant"] == "m-1" && o.GetStatus() == pb.OrderStatus_ORDER_STATUS_PENDING
			}},
			{`order_id:"app*"`, func(o *pb.Order) bool { return strings.HasPrefix(o.GetOrderId(), "app") }},
			{`deadline < "` + mid + `"`, func(o *pb.Order) bool { return o.GetDeadline().AsTime().Before(all[150].GetDeadline().AsTime()) }},
			{`create_time > "2000-01-01T00:00:00Z" AND deadline >= "` + mid + `"`, func(o *pb.Order) bool {
				return !o.GetDeadline().AsTime().Before(all[150].GetDeadline().AsTime())
			}},
		} {
			var want []string
			for _, o := range all {
				if tc.want(o) {
					want = append(want, o.GetOrderId())
				}
			}
			var got []string
			for _, o := range listGRPC(tc.filter, "", 25) {
				got = append(got, o.GetOrderId())
			}
			if strings.Join(got, " ") != strings.Join(want, " ") || len(want) == 0 {
				t.Errorf("ListOrders(%q): %d orders, want %d:\n got %v\nwant %v", tc.filter, len(got), len(want), got, want)
			}
		}

		// REST: the same, page by page.
		var restIDs []string
		token := ""
		for pages := 0; ; pages++ {
			q := url.Values{"filter": {`metadata.merchant = "m-2"`}, "pageSize": {"30"}}
			if token != "" {
				q.Set("pageToken", token)
			}
			code, body := s.restCall(t, "GET", "/v1/orders?"+q.Encode(), "")
			if code != 200 {
				t.Fatalf("GET /v1/orders: %d %v", code, body)
			}
			orders, _ := body["orders"].([]any)
			for _, o := range orders {
				m := o.(map[string]any)
				if field(m, "metadata", "merchant") != "m-2" {
					t.Fatalf("REST listed %v", m)
				}
				restIDs = append(restIDs, m["orderId"].(string))
			}
			token, _ = body["nextPageToken"].(string)
			if token == "" {
				break
			}
		}
		if len(restIDs) != 100 {
			t.Errorf("REST listed %d orders of merchant m-2, want 100", len(restIDs))
		}
		// The proto field names work as query parameters too.
		if code, body := s.restCall(t, "GET", "/v1/orders?page_size=2&order_by=deadline%20desc", ""); code != 200 || len(body["orders"].([]any)) != 2 {
			t.Errorf("GET with page_size and order_by: %d %v", code, body)
		}

		// Tokens belong to their listing.
		first, err := s.Client.ListOrders(ctx, &pb.ListOrdersRequest{Filter: "status = PENDING", PageSize: 5})
		if err != nil || first.GetNextPageToken() == "" {
			t.Fatalf("first page: %v, %v", first, err)
		}
		tok := first.GetNextPageToken()
		forged := []byte(tok)
		forged[len(forged)/2] ^= 1
		for _, tc := range []struct {
			name    string
			req     *pb.ListOrdersRequest
			mention string
		}{
			{"bad filter", &pb.ListOrdersRequest{Filter: `status = PAID`}, "column 10"},
			{"unknown field", &pb.ListOrdersRequest{Filter: `colour = "red"`}, `unknown field "colour"`},
			{"unfinished filter", &pb.ListOrdersRequest{Filter: `status = PENDING AND`}, "column 17"},
			{"bad order_by", &pb.ListOrdersRequest{OrderBy: "create_time"}, "order_by"},
			{"negative page size", &pb.ListOrdersRequest{PageSize: -1}, "page_size"},
			{"token of another filter", &pb.ListOrdersRequest{Filter: "status = COMPLETED", PageToken: tok}, "another filter"},
			{"token with another order", &pb.ListOrdersRequest{Filter: "status = PENDING", OrderBy: "deadline desc", PageToken: tok}, "order_by"},
			{"forged token", &pb.ListOrdersRequest{Filter: "status = PENDING", PageToken: string(forged)}, "page_token"},
			{"made-up token", &pb.ListOrdersRequest{PageToken: "shop-001"}, "not a page token"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				_, err := s.Client.ListOrders(ctx, tc.req)
				wantCode(t, err, codes.InvalidArgument)
				if !strings.Contains(err.Error(), tc.mention) {
					t.Errorf("%v, want it to mention %q", err, tc.mention)
				}
			})
		}
		for _, tc := range []struct{ name, query, mention string }{
			{"bad filter", "filter=" + url.QueryEscape(`deadline < "tomorrow"`), "RFC 3339"},
			{"token of another filter", "filter=" + url.QueryEscape("status = EXPIRED") + "&pageToken=" + tok, "another filter"},
			{"unknown parameter", "colour=red", "colour"},
			{"page size too large", "pageSize=5000", "page_size"},
		} {
			t.Run("REST "+tc.name, func(t *testing.T) {
				code, body := s.restCall(t, "GET", "/v1/orders?"+tc.query, "")
				msg, _ := body["message"].(string)
				if code != 400 || !strings.Contains(msg, tc.mention) {
					t.Errorf("got %d %v, want 400 naming %q", code, body, tc.mention)
				}
			})
		}
	})
}

// TestListOrdersPagingUnderChurn pages through 10,000 orders over REST, 100
// a page, while more orders are checked out over gRPC and the listed ones
// expire and are cancelled underneath: each of the 10,000 is listed once.
func TestListOrdersPagingUnderChurn(t *testing.T) {
	backends(t, func(t *testing.T, start func(t *testing.T) *server) {
		s := start(t)
		ctx := t.Context()
		const n = 10000
		began := time.Now()
		// Deadlines a millisecond apart from 300 ms on: the first pages
		// have expired when they are read, the last have not (the pages
		// move through deadlines faster than the clock), and those between
		// expire while they are read.
		batchCheckout(t, s, ids("churn-", n), func(i int) time.Duration { return 300*time.Millisecond + time.Duration(i)*time.Millisecond }, nil)
		stop := make(chan struct{})
		done := make(chan error, 1)
		go func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					done <- nil
					return
				default:
				}
				if _, err := s.Client.Checkout(ctx, &pb.CheckoutRequest{OrderId: fmt.Sprintf("new-%05d", i), Ttl: ttl(time.Duration(1+i%5000) * time.Millisecond)}); err != nil {
					done <- err
					return
				}
				time.Sleep(2 * time.Millisecond)
			}
		}()
		time.Sleep(400*time.Millisecond - time.Since(began))
		seen := map[string]int{}
		statuses := map[string]int{}
		token := ""
		pages := 0
		for ; ; pages++ {
			if pages > 1000 {
				t.Fatal("no last page after 1,000 pages")
			}
			q := url.Values{"pageSize": {"100"}}
			if token != "" {
				q.Set("pageToken", token)
			}
			code, body := s.restCall(t, "GET", "/v1/orders?"+q.Encode(), "")
			if code != 200 {
				t.Fatalf("page %d: %d %v", pages, code, body)
			}
			orders, _ := body["orders"].([]any)
			for _, o := range orders {
				m := o.(map[string]any)
				id := m["orderId"].(string)
				seen[id]++
				if strings.HasPrefix(id, "churn-") {
					statuses[m["status"].(string)]++
				}
			}
			if token, _ = body["nextPageToken"].(string); token == "" {
				break
			}
			// An order ahead of the pages and one behind them are cancelled.
			for _, i := range []int{(pages * 7919) % n, (pages*104729 + 11) % n} {
				_, err := s.Client.CancelOrder(ctx, &pb.CancelOrderRequest{OrderId: fmt.Sprint("churn-", i)})
				if err != nil && status.Code(err) != codes.FailedPrecondition {
					t.Fatal(err)
				}
			}
		}
		close(stop)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		storetest.CheckListedOnce(t, seen, "churn-%d", n)
		t.Logf("%d pages in %v; the 10,000 by status when listed: %v; %d orders listed in all", pages+1, time.Since(began).Round(time.Millisecond), statuses, len(seen))
		if statuses["ORDER_STATUS_EXPIRED"] == 0 || statuses["ORDER_STATUS_PENDING"] == 0 {
			t.Errorf("the orders did not expire while being listed (%v): the test proves nothing", statuses)
		}
	})
}

// TestListOrdersAuth checks that a listing, even one with an unknown query
// parameter, asks for the token before anything else.
func TestListOrdersAuth(t *testing.T) {
	const token = "list-token-1"
	s := startServerWith(t, serverOptions{Token: token}, map[string]string{"AUTH_TOKENS": token})
	for _, path := range []string{"/v1/orders", "/v1/orders?colour=red", "/v1/orders?filter=status%20%3D%20PAID"} {
		resp, err := http.Get(s.URL(path))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("GET %s without a token: %d, want 401", path, resp.StatusCode)
		}
	}
	if code, body := s.restCall(t, "GET", "/v1/orders?colour=red", ""); code != 400 {
		t.Errorf("GET /v1/orders?colour=red with the token: %d %v, want 400", code, body)
	}
	if code, body := s.restCall(t, "GET", "/v1/orders", ""); code != 200 {
		t.Errorf("GET /v1/orders with the token: %d %v, want 200", code, body)
	}
}
