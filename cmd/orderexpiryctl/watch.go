package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

func watchCommand() *command {
	return &command{
		name:    "watch",
		summary: "print each expiration as it happens, resuming after a cursor",
		help: `The watch follows the expiration log until Ctrl-C (or -limit events), and
opens its stream again after the last event printed whenever it ends (the
service restarts, the connection breaks), so that it misses none within the
service's retention. When it stops, it prints on stderr the cursor to go on
from with -after.

Examples:
  orderexpiryctl watch                  # live events, from now on
  orderexpiryctl watch -after 0-0       # all the service retains, then live
  orderexpiryctl watch -after 1796127975813-0 -o json | jq -r .orderId`,
		setup: watchSetup,
	}
}

// errLimit ends a watch that printed -limit events.
var errLimit = errors.New("the limit of events is reached")

func watchSetup(fs *flag.FlagSet) action {
	after := fs.String("after", "", `start after this cursor ("0-0": all that is retained; empty: live events only)`)
	limit := fs.Int("limit", 0, "stop after this many events; 0: never")
	return func(ctx context.Context, a *app, args []string) error {
		if err := a.exactly(args); err != nil {
			return err
		}
		if *limit < 0 {
			return a.usagef("-limit %d: give 0 (never stop) or more", *limit)
		}
		opts := a.options()
		// The reconnections are told on stderr.
		opts.Logger = slog.New(slog.NewTextHandler(a.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
		c, err := a.dial(opts)
		if err != nil {
			return err
		}
		defer c.Close()
		last, n := *after, 0
		if a.output == "table" {
			fmt.Fprintf(a.stdout, "%-24s  %-24s  %-9s  %-20s  %s\n", "EXPIRED-AT", "ORDER", "LATE", "CURSOR", "METADATA")
		}
		err = c.Watch(ctx, *after, func(ev *pb.ExpirationEvent) error {
			var err error
			if a.output == "json" {
				err = writeJSON(a.stdout, ev, false)
			} else {
				late := ev.GetExpiredAt().AsTime().Sub(ev.GetDeadline().AsTime())
				_, err = fmt.Fprintf(a.stdout, "%-24s  %-24s  %-9s  %-20s  %s\n", when(ev.GetExpiredAt()), ev.GetOrderId(),
					span(durationpb.New(late.Round(time.Millisecond))), ev.GetCursor(), pairs(ev.GetMetadata()))
			}
			if err != nil {
				return err
			}
			last = ev.GetCursor()
			if n++; *limit > 0 && n >= *limit {
				return errLimit
			}
			return nil
		})
		if errors.Is(err, context.Canceled) || errors.Is(err, errLimit) {
			err = nil // Ctrl-C, or -limit reached
		}
		if last != "" {
			fmt.Fprintf(a.stderr, "watched %d expiration(s); go on with: -after %s\n", n, last)
		}
		return err
	}
}
