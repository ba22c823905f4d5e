package main

import (
	"context"
	"flag"
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/orderexpiry/orderexpiry/client"
	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

func ordersCommand() *command {
	return &command{
		name:    "orders",
		summary: "check out, read, list, complete, cancel and reschedule orders",
		subs: []*command{
			{name: "get", args: "ORDER_ID", summary: "show an order", help: `Examples:
  orderexpiryctl orders get ord-1
  orderexpiryctl orders get ord-1 -o json | jq -r .status`,
				setup: func(*flag.FlagSet) action { return orderCall(getOrder) }},
			{name: "checkout", args: "ORDER_ID", summary: "check out a pending order (a repeat while it is pending changes nothing)",
				help: `Examples:
  orderexpiryctl orders checkout ord-1
  orderexpiryctl orders checkout ord-1 -ttl 30m -meta customer=c-7 -meta cart=42`,
				setup: checkoutSetup},
			{name: "list", summary: "list orders, pending and closed, by deadline, with a filter",
				help: `The filter is AIP-160, as ListOrders takes it: comparisons of status,
deadline, created_at, closed_at, order_id (a prefix: order_id:"abc*"),
metadata.KEY and reschedules, joined with AND, OR and NOT.

Examples:
  orderexpiryctl orders list
  orderexpiryctl orders list -filter 'status = PENDING AND deadline < "2026-12-24T18:00:00Z"'
  orderexpiryctl orders list -filter 'metadata.customer = "c-7"' -order-by "deadline desc" -limit 10
  orderexpiryctl orders list -filter 'status = EXPIRED' -o json | jq -r '.orders[].orderId'`,
				setup: listSetup},
			{name: "complete", args: "ORDER_ID", summary: "mark a pending order paid, before its deadline", help: `Example:
  orderexpiryctl orders complete ord-1`,
				setup: func(*flag.FlagSet) action { return orderCall(completeOrder) }},
			{name: "cancel", args: "ORDER_ID", summary: "withdraw a pending order, before its deadline", help: `Example:
  orderexpiryctl orders cancel ord-1`,
				setup: func(*flag.FlagSet) action { return orderCall(cancelOrder) }},
			{name: "reschedule", args: "ORDER_ID", summary: "give a pending order a new deadline: -ttl from now, or -deadline",
				help: `Examples:
  orderexpiryctl orders reschedule ord-1 -ttl 1h
  orderexpiryctl orders reschedule ord-1 -deadline 2026-12-24T18:00:00Z -expect 2026-12-24T17:00:00Z`,
				setup: rescheduleSetup},
		},
	}
}

// orderCall is an action that calls f with the one order id it takes.
func orderCall(f func(ctx context.Context, c *client.Client, id string) (*pb.Order, error)) action {
	return func(ctx context.Context, a *app, args []string) error {
		if err := a.exactly(args, "ORDER_ID"); err != nil {
			return err
		}
		return a.call(ctx, func(ctx context.Context, c *client.Client) error {
			o, err := f(ctx, c, args[0])
			if err != nil {
				return err
			}
			return a.show(o, func(t *table) { orderRows(t, o) })
		})
	}
}

func getOrder(ctx context.Context, c *client.Client, id string) (*pb.Order, error) {
	return c.GetOrder(ctx, &pb.GetOrderRequest{OrderId: id})
}

func completeOrder(ctx context.Context, c *client.Client, id string) (*pb.Order, error) {
	return c.CompleteOrder(ctx, &pb.CompleteOrderRequest{OrderId: id})
}

func cancelOrder(ctx context.Context, c *client.Client, id string) (*pb.Order, error) {
	return c.CancelOrder(ctx, &pb.CancelOrderRequest{OrderId: id})
}

// metaFlag collects -meta key=value.
type metaFlag map[string]string

func (m metaFlag) String() string { return pairs(m) }

func (m metaFlag) Set(v string) error {
	k, val, ok := strings.Cut(v, "=")
	if !ok || k == "" {
		return fmt.Errorf("%q is not key=value", v)
	}
	m[k] = val
	return nil
}

func checkoutSetup(fs *flag.FlagSet) action {
	ttl := fs.Duration("ttl", 0, "how long the order may stay pending (5m, 1h30m); 0: the service's default")
	meta := metaFlag{}
	fs.Var(meta, "meta", "metadata `key=value`, delivered with the expiration; repeat for more")
	return func(ctx context.Context, a *app, args []string) error {
		if err := a.exactly(args, "ORDER_ID"); err != nil {
			return err
		}
		req := &pb.CheckoutRequest{OrderId: args[0], Metadata: meta}
		if *ttl != 0 {
			req.Ttl = durationpb.New(*ttl)
		}
		return a.call(ctx, func(ctx context.Context, c *client.Client) error {
			resp, err := c.Checkout(ctx, req)
			if err != nil {
				return err
			}
			if !resp.GetCreated() && a.output == "table" {
				fmt.Fprintf(a.stderr, "order %s was pending already: nothing changed\n", args[0])
			}
			return a.show(resp, func(t *table) { orderRows(t, resp.GetOrder()) })
		})
	}
}

// timeFlag is an RFC 3339 time, unset when empty.
type timeFlag struct{ t *time.Time }

func (f *timeFlag) String() string {
	if f.t == nil {
		return ""
	}
	return f.t.Format(time.RFC3339Nano)
}

func (f *timeFlag) Set(v string) error {
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return fmt.Errorf("%q is not an RFC 3339 time like 2026-12-24T18:00:00Z", v)
	}
	f.t = &t
	return nil
}

func rescheduleSetup(fs *flag.FlagSet) action {
	ttl := fs.Duration("ttl", 0, "the new deadline, from now (10m, 2h)")
	var deadline, expect timeFlag
	fs.Var(&deadline, "deadline", "the new deadline itself, RFC 3339 (2026-12-24T18:00:00Z)")
	fs.Var(&expect, "expect", "the deadline the order must still have (RFC 3339), or the call is ABORTED: another change came first")
	return func(ctx context.Context, a *app, args []string) error {
		if err := a.exactly(args, "ORDER_ID"); err != nil {
			return err
		}
		req := &pb.RescheduleOrderRequest{OrderId: args[0]}
		switch {
		case (*ttl != 0) == (deadline.t != nil):
			return a.usagef("give -ttl or -deadline, one of them")
		case *ttl != 0:
			req.NewDeadline = &pb.RescheduleOrderRequest_Ttl{Ttl: durationpb.New(*ttl)}
		default:
			req.NewDeadline = &pb.RescheduleOrderRequest_Deadline{Deadline: timestamppb.New(*deadline.t)}
		}
		if expect.t != nil {
			req.ExpectedDeadline = timestamppb.New(*expect.t)
		}
		return a.call(ctx, func(ctx context.Context, c *client.Client) error {
			o, err := c.RescheduleOrder(ctx, req)
			if err != nil {
				return err
			}
			return a.show(o, func(t *table) { orderRows(t, o) })
		})
	}
}

func listSetup(fs *flag.FlagSet) action {
	filter := fs.String("filter", "", "which orders, in the AIP-160 syntax; empty: all")
	orderBy := fs.String("order-by", "", `"deadline" (the default) or "deadline desc"`)
	limit := fs.Int("limit", 50, "the most orders to show; the rest is a -page-token away")
	token := fs.String("page-token", "", "go on from where a previous list stopped, with the same -filter and -order-by")
	return func(ctx context.Context, a *app, args []string) error {
		if err := a.exactly(args); err != nil {
			return err
		}
		if *limit < 1 {
			return a.usagef("-limit %d: give 1 or more", *limit)
		}
		return a.call(ctx, func(ctx context.Context, c *client.Client) error {
			// A page may hold fewer orders than asked, even none, and
			// still have a next one: pages are read until the limit or
			// the end.
			all := &pb.ListOrdersResponse{NextPageToken: *token}
			for first := true; first || all.GetNextPageToken() != ""; first = false {
				want := min(*limit-len(all.Orders), 1000)
				if want == 0 {
					break
				}
				page, err := c.ListOrders(ctx, &pb.ListOrdersRequest{Filter: *filter, OrderBy: *orderBy, PageSize: int32(want), PageToken: all.GetNextPageToken()})
				if err != nil {
					return err
				}
				all.Orders = append(all.Orders, page.GetOrders()...)
				all.NextPageToken = page.GetNextPageToken()
			}
			err := a.show(all, func(t *table) { orderRows(t, all.GetOrders()...) })
			if next := all.GetNextPageToken(); next != "" && a.output == "table" {
				fmt.Fprintf(a.stderr, "more: -page-token %s\n", next)
			}
			return err
		})
	}
}
