// Package consume holds the loop that feeds one consumer of a consumer
// group: it takes what is due, as much as the consumer has room for, from
// the partitions whose log grew, and waits for the log to grow, for the
// consumer to have room again, or for the poll that finds redeliveries due.
//
// A ConsumeExpirations stream (internal/rpc) and a push group's worker
// (internal/push) both run it; what differs between them, where a delivery
// goes and how many may be in flight, is their Sink.
package consume

import (
	"context"
	"time"

	"github.com/orderexpiry/orderexpiry/internal/backoff"
	"github.com/orderexpiry/orderexpiry/internal/order"
)

// Sink is where a loop's deliveries go: a gRPC stream, or HTTP requests to a
// push endpoint. Run calls its methods on its own goroutine only, one at a
// time, so that what a Sink keeps of its deliveries is owned by that
// goroutine and needs no lock; whatever else would change it (an ack on
// another call, a request that ended) says so through Wake instead.
type Sink interface {
	// Room is how many more deliveries the sink takes now. At 0 the loop
	// takes nothing until Wake fires.
	Room() int
	// Put hands one delivery on. It is called at most Room times after a
	// call of Room. An error ends the loop with it.
	Put(ctx context.Context, d order.Delivery) error
	// Failed hears an error of the store's, after the deliveries taken
	// before it were Put. It returns the error that ends the loop, or nil
	// for the loop to try again after a backoff.
	Failed(ctx context.Context, err error) error
	// Wake is a channel on which the sink says that it has news for the
	// loop: room again, or deliveries that may be due. The loop calls
	// Woken after each receive.
	Wake() <-chan struct{}
	// Woken takes the news on the loop's goroutine. look asks the loop to
	// take deliveries from every partition now; an error ends the loop.
	Woken() (look bool, err error)
}

// Source is what a loop takes deliveries from.
type Source struct {
	// Store holds the group.
	Store order.GroupStore
	// Group is the group consumed; its RedeliveryPoll paces the poll.
	Group order.Group
	// Consumer is the consumer's name in the group.
	Consumer string
	// Appended, when set, returns the log's position and a channel closed
	// when the log grows past it (watch.Hub.Appended), so that a new event
	// goes out at once rather than at the next poll, taken from the
	// partitions that grew only.
	Appended func() (order.Cursor, <-chan struct{})
	// DropRepeats, when set, takes each batch of deliveries and returns
	// those to hand on, leaving out repeats of expirations the group had
	// (watch.Hub.DropRepeats).
	DropRepeats func(ctx context.Context, gs order.GroupStore, group string, ds []order.Delivery) []order.Delivery
	// Poll, when set, replaces the group's RedeliveryPoll. Tests set it
	// long, so that only the wakes can deliver.
	Poll time.Duration
}

// Run feeds sink from src until ctx ends, when it returns ctx.Err(), or
// until the sink ends it with an error, which it returns.
//
// The poll finds what no wake announces: redeliveries that fell due (ack
// deadlines passed, nacks' retry_after ran out) and events appended through
// other replicas, when Appended only hears of this one's.
func Run(ctx context.Context, src Source, sink Sink) error {
	every := src.Poll
	if every <= 0 {
		every = src.Group.RedeliveryPoll()
	}
	poll := time.NewTicker(every)
	defer poll.Stop()
	var appended <-chan struct{}
	var seen order.Cursor
	if src.Appended != nil {
		seen, appended = src.Appended()
	}
	var bo backoff.Backoff
	// all: every partition may have something for this consumer;
	// otherwise only those in changed, whose log grew.
	all, changed := true, []int(nil)
	for {
		if room := sink.Room(); room > 0 && (all || len(changed) > 0) {
			ds, err := order.DeliverChanged(ctx, src.Store, src.Group.ID, src.Consumer, all, changed, room)
			if src.DropRepeats != nil {
				ds = src.DropRepeats(ctx, src.Store, src.Group.ID, ds)
			}
			// Events taken before an error (from the partitions read
			// first) are this consumer's now: they are handed on whatever
			// the error, or each would wait out its ack deadline and lose
			// an attempt.
			for _, d := range ds {
				if err := sink.Put(ctx, d); err != nil {
					return err
				}
			}
			if err != nil {
				if err := sink.Failed(ctx, err); err != nil {
					return err
				}
				if !bo.Wait(ctx) {
					return ctx.Err()
				}
				continue
			}
			bo.Reset()
			// A full batch: there may be more ready at once.
			if len(ds) == room {
				continue
			}
		}
		all, changed = false, nil
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-appended:
			var pos order.Cursor
			pos, appended = src.Appended()
			changed = order.Moved(seen, pos)
			all = changed == nil
			seen = pos
		case <-sink.Wake():
			look, err := sink.Woken()
			if err != nil {
				return err
			}
			all = look
		case <-poll.C:
			all = true
		}
	}
}
