package e2e

// The fault test of consumer groups: three replicas on one Redis, two groups
// of three consumers each spread over the replicas, thousands of
// expirations, consumers that refuse some events and one that never
// acknowledges, and, mid-run, a replica SIGKILLed and Redis killed and
// restarted from its append-only file. Every delivery and every ack outcome
// is recorded as the consumers saw it, and the record is held to what the
// service promises a group (see checkGroup).

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/orderexpiry/orderexpiry/internal/order"
	"github.com/orderexpiry/orderexpiry/internal/redistest"
	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// gfRules are the group settings of the fault test and the slack its
// checks allow for the time a delivery takes to reach a consumer.
type gfRules struct {
	ackDeadline   time.Duration
	maxDeliveries int
	// deadlineSlack is how much earlier than ackDeadline after the
	// earliest moment Redis can have handed a delivery out (see
	// gfDelivery.handedOutBy) another consumer may receive the event
	// again: Redis keeps times in whole milliseconds.
	deadlineSlack time.Duration
	// endSlack is how much earlier than its consumer saw a stream end
	// another consumer may receive an event handed back from it: the
	// service hands a stream's deliveries on before it sends the stream's
	// status.
	endSlack time.Duration
}

// gfFaults are the faults of a run: the replica that was SIGKILLed and
// when, and when Redis was killed and when it was serving again.
type gfFaults struct {
	killed                       *server
	killedAt, crashedAt, readyAt time.Time
}

// handedBack says whether the service may have handed a stream's deliveries
// on when it ended. A replica hands a stream's unsettled deliveries back to
// Redis when it sees the stream end, before it sends the stream's status;
// so not when the replica was SIGKILLed, and not when the stream ended
// (as its consumer saw it) while Redis was down: it ended because Redis was
// unreachable, and the hand-back found it so too. The margin allows for
// Redis accepting commands a little before the test saw it answer.
func (f gfFaults) handedBack(st *gfStream) bool {
	e := st.ended
	switch {
	case e.IsZero() || st.srv == f.killed:
		return false
	case !e.Before(f.crashedAt) && e.Before(f.readyAt.Add(-50*time.Millisecond)):
		return false
	}
	return true
}

// gfRefused says whether the test's consumers refuse an order's event: they
// nack it every time, so that it ends a dead letter.
func gfRefused(orderID string) bool { return strings.HasSuffix(orderID, "-bad") }

// gfStream is one ConsumeExpirations stream that a consumer opened.
type gfStream struct {
	consumer string
	srv      *server
	opened   time.Time
	// accepted is when the replica accepted the stream (its header came);
	// zero if it did not.
	accepted time.Time
	// ended is when the consumer saw the stream end (for a stream it
	// closed itself, when it closed it), err why; zero while it runs.
	ended time.Time
	err   error
}

// gfDelivery is one delivery as a consumer received it.
type gfDelivery struct {
	ackID, orderID, consumer string
	attempt                  int
	at                       time.Time
	// expiredAt is when the event was logged.
	expiredAt time.Time
	stream    *gfStream
}

// handedOutBy is the earliest moment Redis can have handed the delivery out,
// which is when its ack deadline starts: not before the event was logged,
// nor before the consumer opened the stream it came on. The consumer may
// receive it much later: a starved replica took 0.8 s to pass deliveries
// on under load, so the consumer's own receipt is no start for the
// deadline.
func (d gfDelivery) handedOutBy() time.Time {
	return latest(d.expiredAt, d.stream.opened)
}

// gfSettle is the outcome of one ack id in an AcknowledgeExpirations or
// NackExpirations call that answered.
type gfSettle struct {
	ackID, orderID, consumer string
	nack                     bool
	// sent is when the consumer first sent a call with this ack id;
	// retried says that an earlier call failed, so that it may have
	// settled the delivery already.
	sent    time.Time
	retried bool
	status  pb.AckIdStatus
	done    time.Time
}

// newGFGroup returns the record of group id, its maps made.
func newGFGroup(id string) *gfGroup {
	return &gfGroup{id: id, callErrors: map[codes.Code]int{}, sent: map[string]bool{}, calling: map[string]int{}}
}

// gfGroup records what the consumers of one group saw.
type gfGroup struct {
	id string

	mu         sync.Mutex
	streams    []*gfStream
	deliveries []gfDelivery
	settles    []gfSettle
	// callErrors counts the codes of ack and nack calls that failed and
	// were tried again.
	callErrors map[codes.Code]int
	// gaveUp counts ack and nack calls given up after failing for long.
	gaveUp int
	// dropped counts the deliveries given up because their stream ended.
	dropped int
	// sent holds the ack ids the acknowledger dealt with: put in an ack or
	// nack call, or dropped.
	sent map[string]bool
	// calling counts each consumer's ack and nack calls under way.
	calling map[string]int
}

func (g *gfGroup) opened(consumer string, s *server) *gfStream {
	st := &gfStream{consumer: consumer, srv: s, opened: time.Now()}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.streams = append(g.streams, st)
	return st
}

func (g *gfGroup) accepted(st *gfStream, at time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	st.accepted = at
}

func (g *gfGroup) delivered(st *gfStream, d *pb.ReceivedExpiration, at time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.deliveries = append(g.deliveries, gfDelivery{ackID: d.GetAckId(), orderID: d.GetEvent().GetOrderId(), consumer: st.consumer,
		attempt: int(d.GetDeliveryAttempt()), at: at, expiredAt: d.GetEvent().GetExpiredAt().AsTime(), stream: st})
}

func (g *gfGroup) ended(st *gfStream, at time.Time, err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	st.ended, st.err = at, err
}

// holdsFresh says whether a consumer holds deliveries it received on a
// replica and has not dealt with yet, each received less than
// within ago: so that it will hold them for a while yet, its acknowledger
// waiting gfHandleTime from the first of a batch. With idle, only while
// none of its ack or nack calls is under way: a call to a replica that is
// then killed is made again on another and settles what it carried.
func (g *gfGroup) holdsFresh(consumer string, s *server, within time.Duration, idle bool) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if idle && g.calling[consumer] > 0 {
		return false
	}
	n := 0
	for _, d := range g.deliveries {
		if d.consumer == consumer && d.stream.srv == s && !g.sent[d.ackID] {
			if time.Since(d.at) >= within {
				return false
			}
			n++
		}
	}
	return n > 0
}

// snapshot returns copies of the record so far.
func (g *gfGroup) snapshot() ([]gfDelivery, []gfSettle) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.deliveries), slices.Clone(g.settles)
}

// gfConsumer is a consumer as its users would write one: a stream that it
// opens again on whichever replica pick gives whenever it ends, and an
// acknowledger that acknowledges what it receives, or nacks it when it
// refuses it, in batches, on the replica pick gives, trying a failed call
// again until it answers. Handling takes a while: a batch is settled
// gfHandleTime after its first event came, so that a consumer holds events
// most of the time, as a real one does when a fault strikes.
type gfConsumer struct {
	name   string
	g      *gfGroup
	how    gfBehaviour
	pick   func() *server
	max    int32
	cancel context.CancelFunc
	done   chan struct{}

	mu        sync.Mutex
	stoppedAt time.Time
}

// gfBehaviour is what a consumer does with what it receives.
type gfBehaviour int

const (
	// gfKeeps settles what it received on a stream that has ended since,
	// through another replica: an ack id is good on any.
	gfKeeps gfBehaviour = iota
	// gfDrops gives up what it received on a stream that has ended, or
	// whose replica died (its stream may not have seen it yet on a busy
	// machine), as a consumer that restarts when it loses its connection
	// does.
	gfDrops
	// gfSilent receives and never answers.
	gfSilent
)

// gfHandleTime is how long a consumer takes over a batch of events.
const gfHandleTime = 100 * time.Millisecond

// gfReceived is a delivery and the stream it came on.
type gfReceived struct {
	d  *pb.ReceivedExpiration
	st *gfStream
}

func startGFConsumer(g *gfGroup, name string, how gfBehaviour, pick func() *server, maxInFlight int32) *gfConsumer {
	ctx, cancel := context.WithCancel(context.Background())
	c := &gfConsumer{name: name, g: g, how: how, pick: pick, max: maxInFlight, cancel: cancel, done: make(chan struct{})}
	var received chan gfReceived
	var wg sync.WaitGroup
	if how != gfSilent {
		// Large enough that the stream never waits for the acknowledger.
		received = make(chan gfReceived, 100000)
		wg.Go(func() { c.acknowledge(ctx, received) })
	}
	wg.Go(func() { c.receive(ctx, received) })
	go func() {
		wg.Wait()
		close(c.done)
	}()
	return c
}

// stop closes the consumer's stream for good and returns when it did so.
func (c *gfConsumer) stop() time.Time {
	at := time.Now()
	c.mu.Lock()
	c.stoppedAt = at
	c.mu.Unlock()
	c.cancel()
	<-c.done
	return at
}

func (c *gfConsumer) receive(ctx context.Context, out chan<- gfReceived) {
	for ctx.Err() == nil {
		s := c.pick()
		if s == nil {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		c.stream(ctx, s, out)
		if ctx.Err() == nil {
			time.Sleep(20 * time.Millisecond)
		}
	}
}

func (c *gfConsumer) stream(ctx context.Context, s *server, out chan<- gfReceived) {
	st := c.g.opened(c.name, s)
	stream, err := s.Client.ConsumeExpirations(ctx, &pb.ConsumeExpirationsRequest{GroupId: c.g.id, Consumer: c.name, MaxInFlight: c.max})
	if err == nil {
		if _, err = stream.Header(); err == nil {
			c.g.accepted(st, time.Now())
		}
	}
	for err == nil {
		var d *pb.ReceivedExpiration
		if d, err = stream.Recv(); err == nil {
			c.g.delivered(st, d, time.Now())
			if out != nil {
				out <- gfReceived{d, st}
			}
		}
	}
	end := time.Now()
	if ctx.Err() != nil {
		c.mu.Lock()
		end = c.stoppedAt
		c.mu.Unlock()
	}
	c.g.ended(st, end, err)
}

func (c *gfConsumer) acknowledge(ctx context.Context, in <-chan gfReceived) {
	for {
		var batch []gfReceived
		select {
		case <-ctx.Done():
			return
		case d := <-in:
			batch = append(batch, d)
		}
		handled := time.NewTimer(gfHandleTime)
	more:
		for len(batch) < 100 {
			select {
			case d := <-in:
				batch = append(batch, d)
			case <-handled.C:
				break more
			case <-ctx.Done():
				handled.Stop()
				return
			}
		}
		handled.Stop()
		var acks, nacks []*pb.ReceivedExpiration
		c.g.mu.Lock()
		for _, r := range batch {
			switch {
			case c.how == gfDrops && (!r.st.ended.IsZero() || !r.st.srv.alive()):
				c.g.dropped++
			case gfRefused(r.d.GetEvent().GetOrderId()):
				nacks = append(nacks, r.d)
			default:
				acks = append(acks, r.d)
			}
			c.g.sent[r.d.GetAckId()] = true
		}
		c.g.mu.Unlock()
		c.settle(ctx, nacks, true)
		c.settle(ctx, acks, false)
	}
}

// settle acknowledges deliveries, or nacks them for redelivery at once,
// trying again while the call fails (a replica killed, Redis down), and
// records each ack id's outcome.
func (c *gfConsumer) settle(ctx context.Context, ds []*pb.ReceivedExpiration, nack bool) {
	if len(ds) == 0 {
		return
	}
	ids := make([]string, len(ds))
	for i, d := range ds {
		ids[i] = d.GetAckId()
	}
	c.g.mu.Lock()
	c.g.calling[c.name]++
	c.g.mu.Unlock()
	defer func() {
		c.g.mu.Lock()
		c.g.calling[c.name]--
		c.g.mu.Unlock()
	}()
	sent, retried := time.Now(), false
	for ctx.Err() == nil {
		if s := c.pick(); s != nil {
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			var results []*pb.AckIdResult
			var err error
			if nack {
				var resp *pb.NackExpirationsResponse
				resp, err = s.Client.NackExpirations(cctx, &pb.NackExpirationsRequest{GroupId: c.g.id, AckIds: ids, RetryAfter: durationpb.New(0)})
				results = resp.GetResults()
			} else {
				var resp *pb.AcknowledgeExpirationsResponse
				resp, err = s.Client.AcknowledgeExpirations(cctx, &pb.AcknowledgeExpirationsRequest{GroupId: c.g.id, AckIds: ids})
				results = resp.GetResults()
			}
			cancel()
			if err == nil {
				done := time.Now()
				c.g.mu.Lock()
				for i, d := range ds {
					st := pb.AckIdStatus_ACK_ID_STATUS_UNSPECIFIED
					if i < len(results) && results[i].GetAckId() == d.GetAckId() {
						st = results[i].GetStatus()
					}
					c.g.settles = append(c.g.settles, gfSettle{ackID: d.GetAckId(), orderID: d.GetEvent().GetOrderId(), consumer: c.name,
						nack: nack, sent: sent, retried: retried, status: st, done: done})
				}
				c.g.mu.Unlock()
				return
			}
			if ctx.Err() != nil {
				return
			}
			c.g.mu.Lock()
			c.g.callErrors[status.Code(err)]++
			c.g.mu.Unlock()
			retried = true
		}
		if time.Since(sent) > 20*time.Second {
			c.g.mu.Lock()
			c.g.gaveUp++
			c.g.mu.Unlock()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// gfFigures are what checkGroup counted of one group.
type gfFigures struct {
	deliveries, redeliveries, acks, ambiguous, doubles, lost, deadLetters int
	// silent counts the deliveries to the silent consumer, silentOrders
	// the orders among them that another consumer acknowledged after.
	silent, silentOrders int
	// minGap is the shortest time between two successive deliveries of an
	// event to which the ack deadline applied, as the consumers received
	// them; maxLate the longest a consumer received such a first delivery
	// after the earliest moment Redis can have handed it out.
	minGap, maxLate time.Duration
	// lapsed counts the dead letters of orders no consumer refused.
	lapsed int
}

// checkGroup holds a group's record to what the service promises:
//
//   - Every delivery is of an order that was checked out, with the attempt
//     of its ack id, at most max_deliveries; an event's deliveries have
//     distinct attempts, received in the order of their attempts.
//   - Exclusivity. Take two successive deliveries of an event, d1 and d2
//     (by attempt; d2 to any consumer, the same one too). The consumer of
//     d1 held it until its ack deadline unless it nacked it, or its stream
//     ended and the service handed it on. The deadline runs from when
//     Redis handed d1 out, which is no earlier than d1.handedOutBy(); so
//     d2 must be received no earlier than ackDeadline - deadlineSlack
//     after that, unless a nack of d1 was sent
//     before d2 was received, or d1's stream had ended (as its consumer
//     saw it, less endSlack) before d2 was received and the service could
//     hand it back then (gfFaults.handedBack: not on the replica that was
//     SIGKILLed, not while Redis was down).
//   - Every refused order was never acknowledged, and the dead letters
//     are the refused orders, each after max_deliveries deliveries, and
//     the orders whose ack deadline lapsed max_deliveries times, none of
//     them ever acknowledged or nacked (a consumer that dies or never
//     answers spends a delivery).
//   - Every other order was acknowledged exactly once: one ACK_ID_STATUS_OK,
//     for its last delivery; none is a lost order, two a double. One
//     exception: an ack call that failed (its replica killed under it) may
//     have acknowledged the event before it failed; when the call made again
//     then answers NOT_IN_FLIGHT and there is no OK, the order counts as
//     acknowledged, and is reported as ambiguous.
//   - Every order the silent consumer received was delivered again to
//     another consumer and acknowledged there.
func checkGroup(t *testing.T, g *gfGroup, checkedOut []string, silent string, letters []*pb.DeadLetter, faults gfFaults, rules gfRules) gfFigures {
	t.Helper()
	deliveries, settles := g.snapshot()
	known := map[string]bool{}
	for _, id := range checkedOut {
		known[id] = true
	}
	errs := 0
	fail := func(format string, args ...any) {
		t.Helper()
		if errs++; errs <= 20 {
			t.Errorf("group %s: "+format, append([]any{g.id}, args...)...)
		}
	}
	f := gfFigures{deliveries: len(deliveries), minGap: time.Hour}
	byOrder := map[string][]gfDelivery{}
	for _, d := range deliveries {
		if !known[d.orderID] {
			fail("delivered %q (%s), an order that was never checked out", d.orderID, d.ackID)
			continue
		}
		if a, err := strconv.Atoi(d.ackID[strings.LastIndexByte(d.ackID, '/')+1:]); err != nil || a != d.attempt {
			fail("ack id %s of %s says another attempt than delivery_attempt %d", d.ackID, d.orderID, d.attempt)
		}
		if d.attempt < 1 || d.attempt > rules.maxDeliveries {
			fail("%s delivered with attempt %d; max_deliveries is %d", d.orderID, d.attempt, rules.maxDeliveries)
		}
		if d.attempt > 1 {
			f.redeliveries++
		}
		if d.consumer == silent {
			f.silent++
		}
		byOrder[d.orderID] = append(byOrder[d.orderID], d)
	}
	nacked := map[string]time.Time{} // ack id -> when its first nack was sent
	oks := map[string][]gfSettle{}   // order id -> its OK acknowledgements
	ambiguous := map[string]bool{}
	for _, s := range settles {
		switch {
		case s.nack:
			if at, ok := nacked[s.ackID]; !ok || s.sent.Before(at) {
				nacked[s.ackID] = s.sent
			}
		case s.status == pb.AckIdStatus_ACK_ID_STATUS_OK:
			oks[s.orderID] = append(oks[s.orderID], s)
		case s.status == pb.AckIdStatus_ACK_ID_STATUS_NOT_IN_FLIGHT && s.retried:
			ambiguous[s.orderID] = true
		}
		if s.status == pb.AckIdStatus_ACK_ID_STATUS_UNSPECIFIED || s.status == pb.AckIdStatus_ACK_ID_STATUS_UNKNOWN {
			fail("%s of %s: %v, for an ack id the service gave", map[bool]string{true: "nack", false: "ack"}[s.nack], s.ackID, s.status)
		}
	}
	history := func(id string) string {
		var b strings.Builder
		for _, d := range byOrder[id] {
			fmt.Fprintf(&b, "\n\t%s attempt %d to %s on %s at %s", d.ackID, d.attempt, d.consumer, d.stream.srv.GRPCAddr, d.at.Format("15:04:05.000"))
			if !d.stream.ended.IsZero() {
				fmt.Fprintf(&b, " (stream ended %s: %v)", d.stream.ended.Format("15:04:05.000"), status.Code(d.stream.err))
			}
		}
		for _, s := range settles {
			if s.orderID == id {
				fmt.Fprintf(&b, "\n\t%s by %s sent %s: %v", map[bool]string{true: "nack", false: "ack"}[s.nack], s.consumer, s.sent.Format("15:04:05.000"), s.status)
			}
		}
		return b.String()
	}
	// lapsed holds the orders no consumer refused that are dead letters
	// because their ack deadline lapsed max_deliveries times, or the last
	// time their stream closed and handed them back: a delivery to
	// the silent consumer, to a consumer of the replica killed, held when
	// Redis died or dropped with its stream is never answered, and a
	// consumer on a busy machine may answer after the deadline (the
	// service then says NOT_IN_FLIGHT). That is what max_deliveries is
	// for; but such an event must never have been acknowledged or nacked.
	lapsed := map[string]bool{}
	for _, dl := range letters {
		if id := dl.GetEvent().GetOrderId(); !gfRefused(id) {
			nacks := slices.ContainsFunc(settles, func(s gfSettle) bool { return s.orderID == id && s.nack })
			switch {
			case len(oks[id]) > 0 || nacks:
				fail("%s is a dead letter (%q); it was acknowledged or nacked:%s", id, dl.GetLastFailure(), history(id))
			case dl.GetLastFailure() != order.ReasonAckDeadline && dl.GetLastFailure() != order.ReasonStreamClosed ||
				dl.GetDeliveryAttempts() != int32(rules.maxDeliveries):
				fail("%s is a dead letter (%q, after %d deliveries); no consumer refused it:%s", id, dl.GetLastFailure(), dl.GetDeliveryAttempts(), history(id))
			default:
				lapsed[id] = true
				t.Logf("group %s: %s is a dead letter, its ack deadline lapsed %d times:%s", g.id, id, rules.maxDeliveries, history(id))
			}
		}
	}
	f.lapsed = len(lapsed)
	for _, id := range checkedOut {
		ds := byOrder[id]
		sort.SliceStable(ds, func(i, j int) bool { return ds[i].attempt < ds[j].attempt })
		for i := 1; i < len(ds); i++ {
			d1, d2 := ds[i-1], ds[i]
			if d1.attempt == d2.attempt {
				fail("%s: attempt %d delivered twice:%s", id, d1.attempt, history(id))
				continue
			}
			if d2.at.Before(d1.at) {
				fail("%s: attempt %d received before attempt %d:%s", id, d2.attempt, d1.attempt, history(id))
				continue
			}
			if at, ok := nacked[d1.ackID]; ok && !d2.at.Before(at) {
				continue
			}
			if faults.handedBack(d1.stream) && !d2.at.Before(d1.stream.ended.Add(-rules.endSlack)) {
				continue
			}
			gap := d2.at.Sub(d1.at)
			f.minGap = min(f.minGap, gap)
			f.maxLate = max(f.maxLate, d1.at.Sub(d1.handedOutBy()))
			if early := d1.handedOutBy().Add(rules.ackDeadline - rules.deadlineSlack).Sub(d2.at); early > 0 {
				fail("%s: in flight at two consumers at once: attempt %d received %s after attempt %d (handed out at the earliest %s before that), %s before its ack deadline of %s:%s",
					id, d2.attempt, gap.Round(time.Millisecond), d1.attempt, d1.at.Sub(d1.handedOutBy()).Round(time.Millisecond),
					early.Round(time.Millisecond), rules.ackDeadline, history(id))
			}
		}
		if lapsed[id] {
			continue
		}
		if gfRefused(id) {
			if len(oks[id]) > 0 {
				fail("%s, which every consumer refuses, was acknowledged:%s", id, history(id))
			}
			continue
		}
		switch n := len(oks[id]); {
		case n == 0 && ambiguous[id]:
			f.ambiguous++
		case n == 0:
			f.lost++
			fail("%s was never acknowledged:%s", id, history(id))
		case n > 1:
			f.doubles += n - 1
			fail("%s acknowledged %d times:%s", id, n, history(id))
		}
		f.acks += len(oks[id])
		if n := len(oks[id]); n > 0 && len(ds) > 0 && oks[id][0].ackID != ds[len(ds)-1].ackID {
			fail("%s: acknowledged %s, but it was delivered again after:%s", id, oks[id][0].ackID, history(id))
		}
		sawSilent, sawOther := false, false
		for _, d := range ds {
			if d.consumer == silent {
				sawSilent = true
			} else if sawSilent {
				sawOther = true
			}
		}
		if sawSilent {
			if !sawOther || len(oks[id]) == 0 && !ambiguous[id] {
				fail("%s was received by the silent consumer %s and not delivered again to another:%s", id, silent, history(id))
			} else {
				f.silentOrders++
			}
		}
	}
	seen := map[string]bool{}
	for _, dl := range letters {
		id := dl.GetEvent().GetOrderId()
		switch {
		case seen[id]:
			fail("%s is a dead letter twice", id)
		case !gfRefused(id):
			// A lapsed one, or failed above.
		case dl.GetDeliveryAttempts() != int32(rules.maxDeliveries):
			fail("dead letter %s after %d deliveries, want %d:%s", id, dl.GetDeliveryAttempts(), rules.maxDeliveries, history(id))
		}
		seen[id] = true
	}
	for _, id := range checkedOut {
		if gfRefused(id) && !seen[id] {
			fail("%s, refused by every consumer, is not a dead letter:%s", id, history(id))
		}
	}
	f.deadLetters = len(letters)
	if errs > 20 {
		t.Errorf("group %s: %d failures in all, the first 20 above", g.id, errs)
	}
	if f.minGap == time.Hour {
		f.minGap = 0
	}
	return f
}

// gfHeld is what became of the deliveries consumers held, unsettled, when
// a fault struck.
type gfHeld struct {
	// held counts them; acked those acknowledged after, through a
	// replica that still ran; nacked those nacked after; again those
	// delivered again though nobody settled them, the last of them
	// againAfter the fault.
	held, acked, nacked, again int
	againAfter                 time.Duration
}

func (h gfHeld) String() string {
	return fmt.Sprintf("%d(acked_after=%d nacked_after=%d delivered_again=%d last_after=%s)",
		h.held, h.acked, h.nacked, h.again, h.againAfter.Round(time.Millisecond))
}

// gfRecovery is how soon a group came back from the faults.
type gfRecovery struct {
	// killReconnect is how long after the kill the last of the killed
	// replica's consumers had a stream accepted by another replica;
	// killHeld is what they held then.
	killReconnect time.Duration
	killHeld      gfHeld
	// redisReconnect is how long after Redis was back the last consumer
	// had the stream accepted that it kept; acksBack how long until an
	// acknowledgement was answered OK; crashHeld what the consumers held
	// when Redis was killed.
	redisReconnect, acksBack time.Duration
	crashHeld                gfHeld
}

// recoveryOf measures a group's recovery, and fails the test when a
// consumer did not come back within 5s, or an event held when a fault
// struck was neither acknowledged after nor delivered again.
func recoveryOf(t *testing.T, g *gfGroup, f gfFaults, rules gfRules) gfRecovery {
	t.Helper()
	const within = 5 * time.Second
	deliveries, settles := g.snapshot()
	g.mu.Lock()
	type streamTimes struct {
		srv                     *server
		opened, accepted, ended time.Time
	}
	byConsumer := map[string][]streamTimes{}
	for _, st := range g.streams {
		byConsumer[st.consumer] = append(byConsumer[st.consumer], streamTimes{st.srv, st.opened, st.accepted, st.ended})
	}
	g.mu.Unlock()
	var r gfRecovery
	for _, c := range slices.Sorted(maps.Keys(byConsumer)) {
		sts := byConsumer[c] // in the order the consumer opened them
		if slices.ContainsFunc(sts, func(s streamTimes) bool {
			return s.srv == f.killed && s.opened.Before(f.killedAt) && !s.accepted.IsZero() && (s.ended.IsZero() || !s.ended.Before(f.killedAt))
		}) {
			i := slices.IndexFunc(sts, func(s streamTimes) bool { return s.srv != f.killed && !s.accepted.Before(f.killedAt) })
			if i < 0 || sts[i].accepted.Sub(f.killedAt) > within {
				t.Errorf("group %s: consumer %s, on the replica that was killed, had no stream on another within %s", g.id, c, within)
			} else {
				r.killReconnect = max(r.killReconnect, sts[i].accepted.Sub(f.killedAt))
			}
		}
		last := sts[len(sts)-1]
		if last.accepted.IsZero() || last.accepted.Sub(f.readyAt) > within {
			t.Errorf("group %s: consumer %s had no stream that lasted within %s of the Redis restart", g.id, c, within)
		} else {
			r.redisReconnect = max(r.redisReconnect, last.accepted.Sub(f.readyAt))
		}
	}
	firstOK := time.Time{}
	for _, s := range settles {
		if !s.nack && s.status == pb.AckIdStatus_ACK_ID_STATUS_OK && s.sent.After(f.readyAt) && (firstOK.IsZero() || s.done.Before(firstOK)) {
			firstOK = s.done
		}
	}
	if firstOK.IsZero() || firstOK.Sub(f.readyAt) > within {
		t.Errorf("group %s: no acknowledgement answered OK within %s of the Redis restart", g.id, within)
	} else {
		r.acksBack = firstOK.Sub(f.readyAt)
	}

	bySettle := map[string][]gfSettle{}
	for _, s := range settles {
		bySettle[s.ackID] = append(bySettle[s.ackID], s)
	}
	// laterOf finds the first delivery of an order received with a later
	// attempt: not always the next one, which Redis may have handed out
	// to a stream that broke before it reached its consumer.
	laterOf := func(d gfDelivery) (time.Time, bool) {
		var at time.Time
		found := false
		for _, e := range deliveries {
			if e.orderID == d.orderID && e.attempt > d.attempt && (!found || e.at.Before(at)) {
				at, found = e.at, true
			}
		}
		return at, found
	}
	// held follows the deliveries that match and that their consumer held
	// at t0: received before it, not settled by then, and not the last
	// delivery an event gets.
	unsettled := 0
	held := func(what string, t0 time.Time, match func(gfDelivery) bool) gfHeld {
		var h gfHeld
		for _, d := range deliveries {
			if !match(d) || !d.at.Before(t0) || d.attempt == rules.maxDeliveries ||
				slices.ContainsFunc(bySettle[d.ackID], func(s gfSettle) bool { return s.done.Before(t0) }) {
				continue
			}
			h.held++
			at, again := laterOf(d)
			switch {
			case slices.ContainsFunc(bySettle[d.ackID], func(s gfSettle) bool {
				return !s.nack && (s.status == pb.AckIdStatus_ACK_ID_STATUS_OK || s.status == pb.AckIdStatus_ACK_ID_STATUS_NOT_IN_FLIGHT)
			}):
				h.acked++
			case slices.ContainsFunc(bySettle[d.ackID], func(s gfSettle) bool { return s.nack }):
				h.nacked++
			case again:
				h.again++
				h.againAfter = max(h.againAfter, at.Sub(t0))
			default:
				if unsettled++; unsettled <= 10 {
					t.Errorf("group %s: %s, held by %s when %s, was neither acknowledged after nor delivered again", g.id, d.orderID, d.consumer, what)
				}
			}
		}
		return h
	}
	r.killHeld = held("its replica was killed", f.killedAt, func(d gfDelivery) bool { return d.stream.srv == f.killed })
	r.crashHeld = held("Redis was killed", f.crashedAt, func(gfDelivery) bool { return true })
	if unsettled > 10 {
		t.Errorf("group %s: %d deliveries held when a fault struck were neither acknowledged after nor delivered again", g.id, unsettled)
	}
	return r
}

// gfGroupNow reads a group, trying the replicas pick gives until one answers
// or timeout passes.
func gfGroupNow(t *testing.T, pick func() *server, id string, timeout time.Duration) *pb.ConsumerGroup {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var err error
		if s := pick(); s != nil {
			var g *pb.ConsumerGroup
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			g, err = s.Client.GetConsumerGroup(ctx, &pb.GetConsumerGroupRequest{GroupId: id})
			cancel()
			if err == nil {
				return g
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("GetConsumerGroup %s: no answer within %s: %v", id, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// gfSameSettings fails the test unless got has the settings and creation
// time of the group as it was created.
func gfSameSettings(t *testing.T, when string, got, created *pb.ConsumerGroup) {
	t.Helper()
	if got.GetAckDeadline().AsDuration() != created.GetAckDeadline().AsDuration() || got.GetMaxDeliveries() != created.GetMaxDeliveries() ||
		!got.GetCreateTime().AsTime().Equal(created.GetCreateTime().AsTime()) {
		t.Errorf("%s, group %s is %v; it was created as %v", when, got.GetGroupId(), got, created)
	}
}

// gfNotBehind fails the test if position a is behind position b anywhere.
func gfNotBehind(t *testing.T, what, a, b string) {
	t.Helper()
	pa, err1 := order.ParseCursor("a", a)
	pbb, err2 := order.ParseCursor("b", b)
	if err1 != nil || err2 != nil || len(pa) != len(pbb) {
		t.Errorf("%s: positions %q and %q: %v %v", what, a, b, err1, err2)
		return
	}
	for i := range pa {
		if pa[i].Less(pbb[i]) {
			t.Errorf("%s: position %s is behind %s", what, a, b)
		}
	}
}

// gfDeadLetters lists every dead letter of a group.
func gfDeadLetters(t *testing.T, s *server, group string) []*pb.DeadLetter {
	t.Helper()
	var out []*pb.DeadLetter
	token := ""
	for {
		resp, err := s.Client.ListDeadLetters(context.Background(), &pb.ListDeadLettersRequest{GroupId: group, PageSize: 40, PageToken: token})
		if err != nil {
			t.Fatalf("ListDeadLetters %s: %v", group, err)
		}
		out = append(out, resp.GetDeadLetters()...)
		if token = resp.GetNextPageToken(); token == "" {
			return out
		}
	}
}

// TestGroupFaults: three replicas on one Redis (AOF, appendfsync always), two
// groups ("pay", "stock") of three consumers each, one on each replica, and
// 5,000 expirations due over ten seconds. Every consumer nacks the orders
// whose id ends in "-bad" (1%), so that they end dead letters after
// max_deliveries; one consumer of "pay" never acknowledges, and leaves near
// the end, holding events. When a stream ends, the consumers of "pay" still
// acknowledge what they got on it, through another replica; those of
// "stock" drop it, so that it must be delivered again. Mid-run the first
// replica is SIGKILLed while its consumers hold events (they open their
// streams again on another), and 3s later Redis is SIGKILLed and restarted
// from its AOF. Each group's record is then held to checkGroup's rules; the
// dead letters are exactly the refused orders; what consumers held when a
// fault struck was acknowledged after or delivered again; the silent
// consumer's last events were handed on when it left, not at their
// deadline; every consumer came back within 5s of each fault; and the
// groups, their settings and positions survived.
//
// appendfsync always: Redis writes and fsyncs its AOF before it sends the
// replies of what it ran, so every checkout, expiration, delivery and
// acknowledgement that anyone saw survives the kill, and the test can hold
// the service to exactly one acknowledgement per event. With everysec,
// Redis may put the write off while a background fsync is slow (up to 2 s)
// and reply first, and a kill then loses deliveries and acknowledgements
// that consumers saw; the test would have to excuse repeats around the
// crash.
func TestGroupFaults(t *testing.T) {
	faultTest(t)
	const (
		n = 5000
		// Orders are due from firstDue after the start, spacing apart, and
		// no sooner than minTTL after their checkout: a busy machine may
		// take longer over the checkouts than the schedule, and the faults
		// come after them (checkoutAll fails the test for a checkout that
		// fails until its deadline), while expirations are still due.
		firstDue    = 5 * time.Second
		spacing     = 2 * time.Millisecond // 500 expirations/s, due over 10 s
		minTTL      = 5 * time.Second
		killAt      = 7 * time.Second // after the start, at the earliest
		crashAfter  = 3 * time.Second // after the kill
		redisDown   = 1500 * time.Millisecond
		maxInFlight = 50
		silentMax   = 20
	)
	rules := gfRules{ackDeadline: 2 * time.Second, maxDeliveries: 3, deadlineSlack: 10 * time.Millisecond, endSlack: 250 * time.Millisecond}
	r := redistest.Start(t, "--appendonly", "yes", "--appendfsync", "always")
	env := map[string]string{"REDIS_URL": r.URL()}
	// The replica to SIGKILL runs as a process of its own; the others in
	// this one.
	reps := []*server{startProcess(t, env), startServer(t, env), startServer(t, env)}
	killed := reps[0]
	survivors := roundRobin(reps[1:]...)

	groupIDs := []string{"pay", "stock"}
	created := map[string]*pb.ConsumerGroup{}
	for _, id := range groupIDs {
		g, err := reps[0].Client.CreateConsumerGroup(context.Background(), &pb.CreateConsumerGroupRequest{GroupId: id,
			AckDeadline: durationpb.New(rules.ackDeadline), MaxDeliveries: int32(rules.maxDeliveries)})
		if err != nil {
			t.Fatal(err)
		}
		created[id] = g
	}
	const silentName = "pay-2"
	groups := map[string]*gfGroup{}
	var consumers []*gfConsumer
	var silent *gfConsumer
	for _, id := range groupIDs {
		g := newGFGroup(id)
		groups[id] = g
		for i := range reps {
			name := fmt.Sprint(id, "-", i)
			limit := int32(maxInFlight)
			if name == silentName {
				limit = silentMax
			}
			how := gfKeeps
			switch {
			case name == silentName:
				how = gfSilent
			case id == "stock":
				how = gfDrops
			}
			c := startGFConsumer(g, name, how, anyAlive(i, reps...), limit)
			consumers = append(consumers, c)
			if name == silentName {
				silent = c
			}
		}
	}
	stopped := map[*gfConsumer]bool{}
	t.Cleanup(func() {
		for _, c := range consumers {
			if !stopped[c] {
				c.stop()
			}
		}
	})

	var orderIDs, refused []string
	for i := range n {
		id := fmt.Sprint("gf-", i)
		if i%100 == 37 {
			id += "-bad"
			refused = append(refused, id)
		}
		orderIDs = append(orderIDs, id)
	}
	start := time.Now()
	checkedOut := checkoutAll(t, roundRobin(reps...), orderIDs, func(i int) time.Time {
		return latest(start.Add(firstDue+time.Duration(i)*spacing), time.Now().Add(minTTL))
	})
	loaded := time.Since(start)
	if len(checkedOut) != n {
		t.Fatalf("%d of %d checkouts were acknowledged", len(checkedOut), n)
	}

	// Fault 1: SIGKILL a replica in the middle of the expirations, when
	// its consumers hold events they have not answered yet (or after 3s
	// of waiting for that).
	time.Sleep(time.Until(start.Add(killAt)))
	for waited := time.Now(); time.Since(waited) < 3*time.Second; time.Sleep(5 * time.Millisecond) {
		if groups["pay"].holdsFresh("pay-0", killed, gfHandleTime/2, false) && groups["stock"].holdsFresh("stock-0", killed, gfHandleTime/2, true) {
			break
		}
	}
	killedAt := time.Now()
	if !killed.Stop(syscall.SIGKILL) {
		t.Fatal("replica 0 did not die")
	}

	// Fault 2: kill Redis and start it again from its AOF.
	time.Sleep(time.Until(killedAt.Add(crashAfter)))
	before := map[string]*pb.ConsumerGroup{}
	for _, id := range groupIDs {
		before[id] = gfGroupNow(t, survivors, id, 2*time.Second)
	}
	r.Kill()
	crashedAt := time.Now()
	time.Sleep(redisDown)
	r.Restart(t)
	readyAt := time.Now()
	for _, id := range groupIDs {
		got := gfGroupNow(t, survivors, id, 5*time.Second)
		gfSameSettings(t, "after the Redis restart", got, created[id])
		gfNotBehind(t, "group "+id+" after the Redis restart", got.GetPosition(), before[id].GetPosition())
		if got.GetDeadLetters() < before[id].GetDeadLetters() {
			t.Errorf("group %s had %d dead letters before the Redis crash, %d after", id, before[id].GetDeadLetters(), got.GetDeadLetters())
		}
	}

	// The silent consumer leaves holding events: once it has received
	// some after the restart, and well before their ack deadline. No
	// consumer is promised a share of the events, so it may wait.
	pay := groups["pay"]
	for waited := time.Now(); ; time.Sleep(10 * time.Millisecond) {
		ds, _ := pay.snapshot()
		if slices.ContainsFunc(ds, func(d gfDelivery) bool { return d.consumer == silentName && d.at.After(readyAt) }) {
			break
		}
		if time.Since(waited) > 15*time.Second {
			t.Errorf("the silent consumer received nothing within 15s of the Redis restart")
			break
		}
	}
	time.Sleep(200 * time.Millisecond)
	silentLeft := silent.stop()
	stopped[silent] = true

	// Every event settles: acknowledged, or a dead letter (the refused
	// orders, and any whose ack deadline lapsed max_deliveries times).
	settled := func() bool {
		for _, id := range groupIDs {
			g := gfGroupNow(t, survivors, id, 5*time.Second)
			if g.GetBacklog() != 0 || g.GetInFlight() != 0 || g.GetDeadLetters() < int64(len(refused)) {
				return false
			}
		}
		return true
	}
	// The last orders are due at the end of the schedule, or minTTL after
	// their checkout when the checkouts fell behind it.
	lastDue := start.Add(max(firstDue+n*spacing, loaded+minTTL))
	for !settled() {
		if time.Since(lastDue) > 20*time.Second {
			// The checks below say what is missing.
			t.Errorf("the groups did not settle within 20s of the last deadline")
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	settledAt := time.Now()
	// Long enough for an event acknowledged and yet still pending to be
	// delivered again, which the checks would catch.
	time.Sleep(rules.ackDeadline + 500*time.Millisecond)
	for _, c := range consumers {
		if !stopped[c] {
			c.stop()
			stopped[c] = true
		}
	}

	logged := readLog(t, survivors, checkedOut, 10*time.Second)
	l := tally(checkedOut, logged)
	if l.Lost > 0 || l.Doubled > 0 || len(logged) != n {
		t.Errorf("the expiration log holds %d events for %d orders: %d lost, %d doubled", len(logged), n, l.Lost, l.Doubled)
	}

	faults := gfFaults{killed: killed, killedAt: killedAt, crashedAt: crashedAt, readyAt: readyAt}
	killHeld, killAgain := 0, 0
	for _, id := range groupIDs {
		g := groups[id]
		silentOf := ""
		if id == "pay" {
			silentOf = silentName
		}
		f := checkGroup(t, g, checkedOut, silentOf, gfDeadLetters(t, reps[1], id), faults, rules)

		// The group, its settings and position survived both faults.
		final := gfGroupNow(t, survivors, id, 5*time.Second)
		gfSameSettings(t, "at the end", final, created[id])
		if len(logged) > 0 && final.GetPosition() != logged[len(logged)-1].cursor {
			t.Errorf("group %s ends at position %s; the log's last event is %s", id, final.GetPosition(), logged[len(logged)-1].cursor)
		}
		if final.GetBacklog() != 0 || final.GetInFlight() != 0 || final.GetDeadLetters() != int64(len(refused)+f.lapsed) {
			t.Errorf("group %s ends with backlog %d, in flight %d, dead letters %d; want 0, 0, %d", id,
				final.GetBacklog(), final.GetInFlight(), final.GetDeadLetters(), len(refused)+f.lapsed)
		}

		deliveries, _ := g.snapshot()
		g.mu.Lock()
		callErrors, gaveUp, dropped := codeCounts(g.callErrors), g.gaveUp, g.dropped
		ends := map[codes.Code]int{}
		for _, st := range g.streams {
			ends[status.Code(st.err)]++
		}
		g.mu.Unlock()
		if gaveUp > 0 {
			t.Errorf("group %s: %d ack or nack calls failed for 20s and were given up", id, gaveUp)
		}
		for code := range ends {
			if code != codes.Unavailable && code != codes.Canceled {
				t.Errorf("group %s: streams ended with %v: %v", id, code, ends)
			}
		}

		rec := recoveryOf(t, g, faults, rules)
		killHeld, killAgain = killHeld+rec.killHeld.held, killAgain+rec.killHeld.again

		// The silent consumer's last events were handed on when it left:
		// those it received in the quarter deadline before, whose
		// deadline was at least 1.5 s away, must be delivered again
		// within half a deadline of its leaving.
		heldOnLeave, handedBack := 0, 0
		if id == "pay" {
			if f.silent == 0 || f.silentOrders == 0 {
				t.Errorf("the silent consumer received %d deliveries, of %d orders acknowledged after by another", f.silent, f.silentOrders)
			}
			next := map[string]time.Time{} // ack id -> when the next attempt was received
			byOrder := map[string][]gfDelivery{}
			for _, d := range deliveries {
				byOrder[d.orderID] = append(byOrder[d.orderID], d)
			}
			for _, d := range deliveries {
				for _, e := range byOrder[d.orderID] {
					if e.attempt == d.attempt+1 {
						next[d.ackID] = e.at
					}
				}
			}
			for _, d := range deliveries {
				if d.consumer != silentName || d.at.Before(silentLeft.Add(-rules.ackDeadline/4)) || d.attempt == rules.maxDeliveries {
					continue
				}
				heldOnLeave++
				at, ok := next[d.ackID]
				if !ok || at.After(silentLeft.Add(rules.ackDeadline/2)) {
					t.Errorf("%s, held by the silent consumer when it left, was not delivered again within %s (next delivery: %v)",
						d.orderID, rules.ackDeadline/2, map[bool]string{true: at.Sub(silentLeft).Round(time.Millisecond).String(), false: "none"}[ok])
					continue
				}
				handedBack++
			}
			if heldOnLeave == 0 {
				t.Errorf("the silent consumer held nothing when it left; the hand-back went untested")
			}
		}

		result(t, "group=%s events=%d deliveries=%d redeliveries=%d acks=%d doubles=%d lost=%d ambiguous_acks=%d dead_letters=%d lapsed_dead_letters=%d "+
			"silent_deliveries=%d silent_orders_redelivered=%d handed_back_on_leave=%d min_deadline_gap=%s max_receipt_late=%s "+
			"kill_reconnected=%s kill_held=%v redis_reconnected=%s redis_acks_ok=%s crash_held=%v dropped=%d ack_call_errors=%s stream_ends=%v",
			id, n, f.deliveries, f.redeliveries, f.acks, f.doubles, f.lost, f.ambiguous, f.deadLetters, f.lapsed,
			f.silent, f.silentOrders, handedBack, f.minGap.Round(time.Millisecond), f.maxLate.Round(time.Millisecond),
			rec.killReconnect.Round(time.Millisecond), rec.killHeld, rec.redisReconnect.Round(time.Millisecond),
			rec.acksBack.Round(time.Millisecond), rec.crashHeld, dropped, callErrors, ends)
	}
	if killHeld == 0 || killAgain == 0 {
		t.Errorf("the killed replica's consumers held %d events when it was killed, %d of them delivered again: the redelivery of a dead replica's deliveries went untested", killHeld, killAgain)
	}
	result(t, "checkouts=%d in %s refused=%d redis_down=%s settled_after_last_deadline=%s",
		n, loaded.Round(time.Millisecond), len(refused), readyAt.Sub(crashedAt).Round(time.Millisecond),
		settledAt.Sub(lastDue).Round(time.Millisecond))
}

// codeCounts prints counts of gRPC codes in a stable order.
func codeCounts(m map[codes.Code]int) string {
	var parts []string
	for c, n := range m {
		parts = append(parts, fmt.Sprint(c, ":", n))
	}
	sort.Strings(parts)
	return "[" + strings.Join(parts, " ") + "]"
}
