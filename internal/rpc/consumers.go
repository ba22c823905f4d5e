package rpc

import (
	"sync"

	"github.com/orderexpiry/orderexpiry/internal/order"
)

// consumers are the ConsumeExpirations streams open on this replica, by
// group: acks and nacks made here tell them at once which of their
// deliveries are settled, and that redeliveries may be due.
type consumers struct {
	mu sync.Mutex
	m  map[string]map[*consumerStream]struct{}
	// stopped is set by stop: no stream opens after it. open counts the
	// streams added and not yet removed, which stop waits for.
	stopped bool
	open    sync.WaitGroup
}

// errShuttingDown ends the consume streams of a stopping server.
var errShuttingDown = order.Fail(order.ReasonShuttingDown, "", "the server is shutting down; reconnect")

// maxUnheard bounds the batches of settled ack ids a stream's mailbox
// keeps until its loop reads them.
const maxUnheard = 16

// consumerStream is what a stream hears from the rest of the replica: the
// calls that settle its group's deliveries, and stop, write its mailbox on
// their own goroutines, and only wake the stream's loop; the loop reads the
// mailbox on its goroutine, the one owner of the stream's deliveries.
type consumerStream struct {
	mu sync.Mutex
	// settled holds ack ids settled by calls on this replica.
	settled [][]order.AckID
	// kick says that redeliveries may be due now (a nack, a redrive).
	kick bool
	// stopping says that the server is stopping.
	stopping bool
	// wake has a value while the mailbox has news: one is enough, so a
	// writer never blocks.
	wake chan struct{}
}

// note is what a stream's mailbox held.
type note struct {
	settled  [][]order.AckID
	kick     bool
	stopping bool
}

// post writes the mailbox and wakes the stream.
func (cs *consumerStream) post(settled []order.AckID, kick, stopping bool) {
	cs.mu.Lock()
	// A stream too busy to hear frees its slots at the ack deadline
	// instead.
	if len(settled) > 0 && len(cs.settled) < maxUnheard {
		cs.settled = append(cs.settled, settled)
	}
	cs.kick = cs.kick || kick
	cs.stopping = cs.stopping || stopping
	cs.mu.Unlock()
	select {
	case cs.wake <- struct{}{}:
	default:
	}
}

// take empties the mailbox.
func (cs *consumerStream) take() note {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	n := note{settled: cs.settled, kick: cs.kick, stopping: cs.stopping}
	cs.settled, cs.kick = nil, false
	return n
}

// add registers a stream of group, unless the group has limit streams
// open; once the consumers are stopped it refuses with errShuttingDown.
func (c *consumers) add(group string, limit int) (*consumerStream, bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return nil, false, errShuttingDown
	}
	if c.m == nil {
		c.m = make(map[string]map[*consumerStream]struct{})
	}
	if len(c.m[group]) >= limit {
		return nil, false, nil
	}
	if c.m[group] == nil {
		c.m[group] = make(map[*consumerStream]struct{})
	}
	cs := &consumerStream{wake: make(chan struct{}, 1)}
	c.m[group][cs] = struct{}{}
	// Under mu and before stopped is set: every Add happens before stop's
	// Wait, as a WaitGroup requires.
	c.open.Add(1)
	return cs, true, nil
}

func (c *consumers) remove(group string, cs *consumerStream) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m[group], cs)
	if len(c.m[group]) == 0 {
		delete(c.m, group)
	}
	c.open.Done()
}

// stop refuses new streams, tells the open ones to hand their deliveries
// back and end, and waits until every one is removed.
func (c *consumers) stop() {
	c.mu.Lock()
	c.stopped = true
	for _, streams := range c.m {
		for cs := range streams {
			cs.post(nil, false, true)
		}
	}
	c.mu.Unlock()
	c.open.Wait()
}

// tell passes settled ack ids (none: only a kick) to a group's streams,
// never blocking.
func (c *consumers) tell(group string, settled []order.AckID, kick bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for cs := range c.m[group] {
		cs.post(settled, kick, false)
	}
}
