package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/orderexpiry/orderexpiry/client"
	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

func groupsCommand() *command {
	return &command{
		name:    "groups",
		summary: "consumer groups: list, get, create, delete, dead letters, redrive",
		subs: []*command{
			{name: "list", summary: "list the consumer groups with their state", help: `Example:
  orderexpiryctl groups list`, setup: func(*flag.FlagSet) action { return listGroups }},
			{name: "get", args: "GROUP_ID", summary: "show a consumer group's settings and state", help: `Example:
  orderexpiryctl groups get billing -o json | jq .deadLetters`, setup: func(*flag.FlagSet) action { return getGroup }},
			{name: "create", args: "GROUP_ID", summary: "create a consumer group (again with the same settings: no change)",
				help: `Examples:
  orderexpiryctl groups create billing -ack-deadline 1m -max-deliveries 3
  orderexpiryctl groups create audit -start-after 0-0
  orderexpiryctl groups create hooks -push-url https://hooks.example.com/expired -push-secret-file ./whsec.txt`,
				setup: createGroupSetup},
			{name: "delete", args: "GROUP_ID", summary: "delete a consumer group, with its deliveries in flight and its dead letters",
				help: `Example:
  orderexpiryctl groups delete billing`, setup: func(*flag.FlagSet) action { return deleteGroup }},
			{name: "dead-letters", args: "GROUP_ID", summary: "list a group's dead letters, oldest first",
				help: `Examples:
  orderexpiryctl groups dead-letters billing
  orderexpiryctl groups dead-letters billing -page-size 10 -page-token <token printed by the previous page>`,
				setup: deadLettersSetup},
			{name: "redrive", args: "GROUP_ID [DEAD_LETTER_ID...]", summary: "deliver dead letters again: those named, or -all",
				help: `Examples:
  orderexpiryctl groups redrive billing -all
  orderexpiryctl groups redrive billing 0/1796127975813-0`,
				setup: redriveSetup},
		},
	}
}

func listGroups(ctx context.Context, a *app, args []string) error {
	if err := a.exactly(args); err != nil {
		return err
	}
	return a.call(ctx, func(ctx context.Context, c *client.Client) error {
		all := &pb.ListConsumerGroupsResponse{}
		for token := ""; ; {
			page, err := c.ListConsumerGroups(ctx, &pb.ListConsumerGroupsRequest{PageToken: token})
			if err != nil {
				return err
			}
			all.ConsumerGroups = append(all.ConsumerGroups, page.GetConsumerGroups()...)
			if token = page.GetNextPageToken(); token == "" {
				break
			}
		}
		return a.show(all, func(t *table) { groupRows(t, all.GetConsumerGroups()...) })
	})
}

func getGroup(ctx context.Context, a *app, args []string) error {
	if err := a.exactly(args, "GROUP_ID"); err != nil {
		return err
	}
	return a.call(ctx, func(ctx context.Context, c *client.Client) error {
		g, err := c.GetConsumerGroup(ctx, &pb.GetConsumerGroupRequest{GroupId: args[0]})
		if err != nil {
			return err
		}
		return a.show(g, func(t *table) { groupRows(t, g) })
	})
}

func createGroupSetup(fs *flag.FlagSet) action {
	ack := fs.Duration("ack-deadline", 0, "how long a consumer has to acknowledge (100ms to 10m); 0: the service's 30s")
	maxDeliveries := fs.Int("max-deliveries", 0, "deliveries of an event before it is a dead letter (1 to 100); 0: the service's 5")
	start := fs.String("start-after", "", `start after this cursor ("0-0": all that is retained); empty: from now on`)
	pushURL := fs.String("push-url", "", "make it a push group: the service POSTs each event to this URL")
	secretFile := fs.String("push-secret-file", "", `file holding the push secret, "whsec_" and base64 (or env ORDEREXPIRY_PUSH_SECRET)`)
	pushTimeout := fs.Duration("push-timeout", 0, "bound of each push request; 0: the service's default")
	pushConc := fs.Int("push-max-concurrency", 0, "push requests in flight at once from each replica; 0: the service's 10")
	return func(ctx context.Context, a *app, args []string) error {
		if err := a.exactly(args, "GROUP_ID"); err != nil {
			return err
		}
		deliveries, err := a.int32Of("max-deliveries", *maxDeliveries)
		if err != nil {
			return err
		}
		conc, err := a.int32Of("push-max-concurrency", *pushConc)
		if err != nil {
			return err
		}
		req := &pb.CreateConsumerGroupRequest{GroupId: args[0], StartAfterCursor: *start, MaxDeliveries: deliveries}
		if *ack != 0 {
			req.AckDeadline = durationpb.New(*ack)
		}
		if *pushURL == "" && (*secretFile != "" || *pushTimeout != 0 || *pushConc != 0) {
			// Without a URL the group is a pull group: they would be
			// dropped without a word.
			return a.usagef("-push-secret-file, -push-timeout and -push-max-concurrency go with -push-url")
		}
		if *pushURL != "" {
			secret := os.Getenv("ORDEREXPIRY_PUSH_SECRET")
			if *secretFile != "" {
				b, err := os.ReadFile(*secretFile)
				if err != nil {
					return a.usagef("-push-secret-file: %v", err)
				}
				secret = strings.TrimSpace(string(b))
			}
			req.PushConfig = &pb.PushConfig{Url: *pushURL, Secret: secret, MaxConcurrency: conc}
			if *pushTimeout != 0 {
				req.PushConfig.Timeout = durationpb.New(*pushTimeout)
			}
		}
		return a.call(ctx, func(ctx context.Context, c *client.Client) error {
			g, err := c.CreateConsumerGroup(ctx, req)
			if err != nil {
				return err
			}
			return a.show(g, func(t *table) { groupRows(t, g) })
		})
	}
}

func deleteGroup(ctx context.Context, a *app, args []string) error {
	if err := a.exactly(args, "GROUP_ID"); err != nil {
		return err
	}
	return a.call(ctx, func(ctx context.Context, c *client.Client) error {
		resp, err := c.DeleteConsumerGroup(ctx, &pb.DeleteConsumerGroupRequest{GroupId: args[0]})
		if err != nil {
			return err
		}
		return a.show(resp, func(t *table) { t.row("deleted consumer group " + args[0]) })
	})
}

func deadLettersSetup(fs *flag.FlagSet) action {
	size := fs.Int("page-size", 0, "the most dead letters to show (at most 1000); 0: 100")
	token := fs.String("page-token", "", "the page to show, as the previous page printed it; empty: the first")
	return func(ctx context.Context, a *app, args []string) error {
		if err := a.exactly(args, "GROUP_ID"); err != nil {
			return err
		}
		pageSize, err := a.int32Of("page-size", *size)
		if err != nil {
			return err
		}
		return a.call(ctx, func(ctx context.Context, c *client.Client) error {
			resp, err := c.ListDeadLetters(ctx, &pb.ListDeadLettersRequest{GroupId: args[0], PageSize: pageSize, PageToken: *token})
			if err != nil {
				return err
			}
			err = a.show(resp, func(t *table) {
				// The reason last: it may hold spaces.
				t.row("DEAD-LETTER", "ORDER", "EXPIRED-AT", "ATTEMPTS", "FIRST-DELIVERY", "FAILED-AT", "METADATA", "REASON")
				for _, d := range resp.GetDeadLetters() {
					ev := d.GetEvent()
					t.row(d.GetDeadLetterId(), ev.GetOrderId(), when(ev.GetExpiredAt()), fmt.Sprint(d.GetDeliveryAttempts()),
						when(d.GetFirstDeliveryTime()), when(d.GetLastFailureTime()), pairs(ev.GetMetadata()), orDash(d.GetLastFailure()))
				}
			})
			if next := resp.GetNextPageToken(); next != "" && a.output == "table" {
				fmt.Fprintf(a.stderr, "more: -page-token %s\n", next)
			}
			return err
		})
	}
}

func redriveSetup(fs *flag.FlagSet) action {
	all := fs.Bool("all", false, "put every dead letter back")
	return func(ctx context.Context, a *app, args []string) error {
		if len(args) == 0 {
			return a.usagef("want GROUP_ID, then dead letter ids or -all")
		}
		if *all == (len(args) > 1) {
			return a.usagef("give dead letter ids or -all, one of them")
		}
		req := &pb.RedriveDeadLettersRequest{GroupId: args[0], DeadLetterIds: args[1:], All: *all}
		return a.call(ctx, func(ctx context.Context, c *client.Client) error {
			resp, err := c.RedriveDeadLetters(ctx, req)
			if err != nil {
				return err
			}
			return a.show(resp, func(t *table) { t.row(fmt.Sprintf("redrove %d dead letter(s) of %s", resp.GetRedriven(), args[0])) })
		})
	}
}

func statsCommand() *command {
	return &command{
		name:    "stats",
		summary: "the orders by status, the partitions, the groups and this replica's lateness",
		help: `Examples:
  orderexpiryctl stats
  orderexpiryctl stats -o json | jq .orders.pending`,
		setup: func(*flag.FlagSet) action { return stats },
	}
}

func stats(ctx context.Context, a *app, args []string) error {
	if err := a.exactly(args); err != nil {
		return err
	}
	return a.call(ctx, func(ctx context.Context, c *client.Client) error {
		s, err := c.GetStats(ctx, &pb.GetStatsRequest{})
		if err != nil {
			return err
		}
		return a.show(s, func(t *table) {
			o := s.GetOrders()
			t.row("PENDING", "EXPIRED", "COMPLETED", "CANCELLED", "COUNTED-SINCE")
			t.row(fmt.Sprint(o.GetPending()), fmt.Sprint(o.GetExpired()), fmt.Sprint(o.GetCompleted()), fmt.Sprint(o.GetCancelled()), when(o.GetCountedSince()))
			t.row()
			t.row("PARTITION", "PENDING", "NEXT-DEADLINE", "EVENTS")
			for _, p := range s.GetPartitions() {
				t.row(fmt.Sprint(p.GetPartition()), fmt.Sprint(p.GetPending()), when(p.GetNextDeadline()), fmt.Sprint(p.GetEvents()))
			}
			t.row()
			l := s.GetReplica().GetLateness()
			t.row("WATCHERS", "LATENESS-WINDOW", "EXPIRATIONS", "P50", "P99", "MAX")
			t.row(fmt.Sprint(s.GetReplica().GetWatchers()), span(l.GetWindow()), fmt.Sprint(l.GetCount()), span(l.GetP50()), span(l.GetP99()), span(l.GetMax()))
			if len(s.GetConsumerGroups()) > 0 {
				t.row()
				groupRows(t, s.GetConsumerGroups()...)
			}
		})
	})
}
