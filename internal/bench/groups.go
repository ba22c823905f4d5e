package bench

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

const (
	// groupConsumers is how many consumers share the stage's one group.
	groupConsumers = 4
	// groupInFlight is each consumer stream's max_in_flight.
	groupInFlight = 100
	// groupAckDeadline is the group's ack deadline: long enough that no
	// event is delivered again while its acknowledgement is on the way, so
	// that a repeat is a fault, not the load.
	groupAckDeadline = 30 * time.Second
	// groupID names the stage's group.
	groupID = "bench"
)

// groups runs stage 7: one consumer group with groupConsumers consumers,
// each a ConsumeExpirations stream over its own connection that
// acknowledges every delivery at once, beside one broadcast
// WatchExpirations watcher in the same run, while groupRate orders expire a
// second for groupFor. The group must get every event exactly once, and its
// p99 from deadline to delivery be within 2× of the watcher's.
func (r *runner) groups(ctx context.Context) error {
	e, err := r.startEnv()
	if err != nil {
		return err
	}
	defer e.stop()
	n := int(float64(r.sz.groupRate) * r.sz.groupFor.Seconds())
	label := fmt.Sprintf("7 groups: %d consumers in one group and 1 watcher, %d orders due over %s", groupConsumers, n, r.sz.groupFor)
	r.logf("%s", label)
	rate, err := r.calibrate(ctx, e, n)
	if err != nil {
		return err
	}
	if _, err := e.clients[0].CreateConsumerGroup(ctx, &pb.CreateConsumerGroupRequest{GroupId: groupID, AckDeadline: durationpb.New(groupAckDeadline)}); err != nil {
		return fmt.Errorf("CreateConsumerGroup: %w", err)
	}
	const prefix = "g7-"
	w, err := startWatchers(ctx, e.svc.GRPCAddr, 1, prefix, n)
	if err != nil {
		return err
	}
	defer w.stop()
	c, err := startConsumers(ctx, e.svc.GRPCAddr, groupID, groupConsumers, groupInFlight, prefix, n)
	if err != nil {
		return err
	}
	defer c.stop()

	lead := checkoutLead(n, rate)
	start := time.Now().Add(lead)
	last := start.Add(r.sz.groupFor)
	r.logf("  checking out %d orders due from %s to %s", n, lead.Round(time.Millisecond), (lead + r.sz.groupFor).Round(time.Millisecond))
	took, err := checkoutAll(ctx, e.clients, r.sz.callers, n, func(i int) string { return prefix + strconv.Itoa(i) }, until(start, r.sz.groupFor, n))
	if err != nil {
		return err
	}
	gap := time.Until(start)
	r.logf("  checked out in %s, %s before the first deadline; waiting for the events", took.Round(time.Millisecond), gap.Round(time.Millisecond))
	prof := r.profile(e.svc, "groups", start.Add(-100*time.Millisecond))
	rdb := e.redis.Client()
	defer rdb.Close()
	time.Sleep(time.Until(start))
	cpu, stats := e.cpu(), readRedisStats(ctx, rdb)
	bound := last.Add(r.sz.svcWait)
	w.wait(bound)
	c.wait(bound)
	waited := time.Since(last)
	if err := e.exited(); err != nil {
		return err
	}
	cpuNote := e.cpuSince(cpu, 0)
	r.logf("  %s", cpuNote)
	r.t.note("7: %s", readRedisStats(ctx, rdb).since(stats))
	r.t.note("7: from the first deadline until the last event: %s", cpuNote)
	// Every acknowledgement must be answered before the streams end: the
	// service hands a closed stream's unacknowledged deliveries back.
	drained := c.drain(10 * time.Second)
	state, stateErr := e.clients[0].GetConsumerGroup(ctx, &pb.GetConsumerGroupRequest{GroupId: groupID})
	w.stop()
	c.stop()
	prof.wait()

	watch := watchResult(w.ws)
	watch.waited = waited
	g := c.result()
	g.waited = waited
	acks := summarize(c.t.ackLat)
	t := c.t // read without its lock: every goroutine that writes it has ended

	exactlyOnce := g.got == g.want && g.dups == 0
	r.t.add(row{"7", fmt.Sprintf("events delivered to the group (%d consumers, %d due)", groupConsumers, n), count(g.got, g.want),
		count(watch.got, watch.want) + " watch", ratio(float64(g.got), float64(watch.got)), "each exactly once", yesNo(exactlyOnce)})
	lat := func(what string, a, b time.Duration, goal, met string) {
		r.t.add(row{"7", "deadline → delivery " + what, g.fmt(a), watch.fmt(b) + " watch", latRatio(a, g.waited, b, watch.waited), goal, met})
	}
	lat("p50", g.late.P50, watch.late.P50, "", "")
	lat("p99", g.late.P99, watch.late.P99, "≤ 2× watch", yesNo(exactlyOnce && watch.got == watch.want && g.late.P99 <= 2*watch.late.P99))
	lat("max", g.late.Max, watch.late.Max, "", "")
	r.t.add(row{"7", "deliveries acknowledged OK", count(t.ackOK, t.received), "", "", "all", yesNo(drained && t.ackOK == t.received && t.received > 0)})
	r.t.add(row{"7", "AcknowledgeExpirations p50", ms(acks.P50), "", "", "", ""})
	r.t.add(row{"7", "AcknowledgeExpirations p99", ms(acks.P99), "", "", "report", ""})
	r.t.add(row{"7", "AcknowledgeExpirations max", ms(acks.Max), "", "", "", ""})

	r.t.note("7: %d orders checked out in %s, the last %s before the first deadline; group %q, ack_deadline %s, %d consumers with max_in_flight %d, each over its own gRPC connection, as was the watcher",
		n, took.Round(time.Millisecond), gap.Round(time.Millisecond), groupID, groupAckDeadline, groupConsumers, groupInFlight)
	r.t.note("7: group: %d of %d events delivered, %d missing, %d delivered more than once (%d repeat deliveries, %d with delivery_attempt > 1); deliveries per consumer %s; %d stream reconnects (last error: %v)",
		g.got, g.want, g.want-g.got, t.doubled, g.dups, t.redelivered, strings.Join(t.perConsumer(), "/"), g.reconnects, g.lastErr)
	r.t.note("7: watch: %d of %d events, %d duplicates, %d reconnects (last error: %v); claim lateness (expired_at - deadline) p50 %s, p99 %s, max %s",
		watch.got, watch.want, watch.dups, watch.reconnects, watch.lastErr, watch.fmt(watch.claim.P50), watch.fmt(watch.claim.P99), watch.fmt(watch.claim.Max))
	perCall := 0.0
	if len(t.ackLat) > 0 {
		perCall = float64(t.ackSent) / float64(len(t.ackLat))
	}
	unanswered := ""
	if !drained {
		unanswered = fmt.Sprintf("; %d were still unanswered 10 s after the wait for the events ended", t.received-t.ackSent)
	}
	r.t.note("7: acknowledgements: each consumer acknowledges as it receives, one call out at a time, so a call carries every ack id received while the previous one was out (%.2f ids a call on average); %d calls, %d ids, %d OK, %d answered otherwise (first: %s), %d failed calls (last error: %v)%s",
		perCall, len(t.ackLat)+t.ackErrs, t.ackSent, t.ackOK, t.ackNotOK, orDash(t.firstNotOK), t.ackErrs, t.ackErr, unanswered)
	if stateErr != nil {
		r.t.note("7: GetConsumerGroup after the run: %v", stateErr)
	} else {
		r.t.note("7: the group after the run (GetConsumerGroup): backlog %d, in flight %d, dead letters %d",
			state.GetBacklog(), state.GetInFlight(), state.GetDeadLetters())
	}
	r.logf("  group: delivered %d/%d (%d doubles), p50 %s, p99 %s, max %s; watch: %d/%d, p50 %s, p99 %s, max %s; ack p50 %s, p99 %s over %d calls",
		g.got, g.want, t.doubled, g.fmt(g.late.P50), g.fmt(g.late.P99), g.fmt(g.late.Max),
		watch.got, watch.want, watch.fmt(watch.late.P50), watch.fmt(watch.late.P99), watch.fmt(watch.late.Max),
		ms(acks.P50), ms(acks.P99), len(t.ackLat))
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// groupTally is what a group's consumers recorded together: which tracked
// orders' events ("<prefix><i>", i in [0, n)) reached the group, how late
// the first delivery of each was, and how the acknowledgements went.
type groupTally struct {
	mu     sync.Mutex
	prefix string
	n      int
	done   chan struct{} // closed when every tracked event was delivered

	deliveries  []int           // by order: how many times delivered
	late        []time.Duration // receive - deadline, first deliveries
	claim       []time.Duration // expired_at - deadline, first deliveries
	got         int             // orders delivered at least once
	doubled     int             // orders delivered more than once
	repeats     int             // deliveries after an order's first
	redelivered int             // deliveries with delivery_attempt > 1
	received    int             // every delivery, tracked or not
	byConsumer  []int           // deliveries by consumer
	reconnects  int
	lastErr     error

	ackLat     []time.Duration // per AcknowledgeExpirations call, send → answer
	ackSent    int             // ack ids of the calls that returned
	ackOK      int
	ackNotOK   int
	firstNotOK string
	ackErrs    int
	ackErr     error
}

func newGroupTally(prefix string, n, consumers int) *groupTally {
	return &groupTally{prefix: prefix, n: n, done: make(chan struct{}), deliveries: make([]int, n),
		late: make([]time.Duration, 0, n), claim: make([]time.Duration, 0, n), byConsumer: make([]int, consumers)}
}

// delivered records one delivery to consumer k, received at now.
func (t *groupTally) delivered(k int, d *pb.ReceivedExpiration, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.received++
	t.byConsumer[k]++
	if d.GetDeliveryAttempt() > 1 {
		t.redelivered++
	}
	ev := d.GetEvent()
	rest, ok := strings.CutPrefix(ev.GetOrderId(), t.prefix)
	if !ok {
		return
	}
	i, err := strconv.Atoi(rest)
	if err != nil || i < 0 || i >= t.n {
		return
	}
	t.deliveries[i]++
	switch t.deliveries[i] {
	case 1:
		t.got++
		t.late = append(t.late, now.Sub(ev.GetDeadline().AsTime()))
		t.claim = append(t.claim, ev.GetExpiredAt().AsTime().Sub(ev.GetDeadline().AsTime()))
		if t.got == t.n {
			close(t.done)
		}
	case 2:
		t.doubled++
		t.repeats++
	default:
		t.repeats++
	}
}

// acked records one AcknowledgeExpirations call of ids that took took.
func (t *groupTally) acked(ids []string, took time.Duration, resp *pb.AcknowledgeExpirationsResponse, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.ackSent += len(ids)
	if err != nil {
		t.ackErrs++
		t.ackErr = err
		return
	}
	t.ackLat = append(t.ackLat, took)
	for _, res := range resp.GetResults() {
		if res.GetStatus() == pb.AckIdStatus_ACK_ID_STATUS_OK {
			t.ackOK++
			continue
		}
		t.ackNotOK++
		if t.firstNotOK == "" {
			t.firstNotOK = res.GetAckId() + " " + res.GetStatus().String()
		}
	}
}

// settled reports whether every delivery so far had its acknowledgement
// call return.
func (t *groupTally) settled() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.ackSent == t.received
}

func (t *groupTally) perConsumer() []string {
	out := make([]string, len(t.byConsumer))
	for k, v := range t.byConsumer {
		out[k] = strconv.Itoa(v)
	}
	return out
}

// consumerFleet is a group's consumers, each a ConsumeExpirations stream
// over its own connection with an acknowledger beside it.
type consumerFleet struct {
	t       *groupTally
	conns   []*grpc.ClientConn
	cancel  context.CancelFunc // ends the streams
	ackStop context.CancelFunc // ends the acknowledgers
	wg      sync.WaitGroup
	once    sync.Once
}

// startConsumers opens k consumers "bench-0"… of group, each with
// max_in_flight inFlight, tracking the orders "<prefix><i>", i in [0, n),
// and waits until each stream has its response header.
func startConsumers(ctx context.Context, addr, group string, k, inFlight int, prefix string, n int) (*consumerFleet, error) {
	conns, clients, err := dial(addr, k)
	if err != nil {
		return nil, err
	}
	streamCtx, cancel := context.WithCancel(ctx)
	ackCtx, ackStop := context.WithCancel(context.Background())
	f := &consumerFleet{t: newGroupTally(prefix, n, k), conns: conns, cancel: cancel, ackStop: ackStop}
	ready := make([]chan struct{}, k)
	for i := range k {
		ready[i] = make(chan struct{})
		// Never full: a stream has at most inFlight deliveries unsettled,
		// and each is queued here once.
		acks := make(chan string, 4*inFlight)
		f.wg.Go(func() { f.consume(streamCtx, clients[i], group, i, inFlight, ready[i], acks) })
		f.wg.Go(func() { f.acknowledge(ackCtx, clients[i], group, acks) })
	}
	timeout := time.After(30 * time.Second)
	for _, rd := range ready {
		select {
		case <-rd:
		case <-timeout:
			f.stop()
			return nil, fmt.Errorf("%d consumers did not start within 30s", k)
		}
	}
	return f, nil
}

// consume follows one consumer's stream until ctx ends, and queues each
// delivery's ack id. A stream that ends with an error is opened again, as a
// real consumer does; the service hands what it had in flight on.
func (f *consumerFleet) consume(ctx context.Context, client pb.OrderServiceClient, group string, k, inFlight int, ready chan struct{}, acks chan<- string) {
	readyOnce := sync.OnceFunc(func() { close(ready) })
	defer readyOnce()
	defer close(acks)
	req := &pb.ConsumeExpirationsRequest{GroupId: group, Consumer: "bench-" + strconv.Itoa(k), MaxInFlight: int32(inFlight)}
	for ctx.Err() == nil {
		stream, err := client.ConsumeExpirations(ctx, req)
		if err == nil {
			_, err = stream.Header()
		}
		if err == nil {
			readyOnce()
			for {
				d, rerr := stream.Recv()
				now := time.Now()
				if rerr != nil {
					err = rerr
					break
				}
				f.t.delivered(k, d, now)
				acks <- d.GetAckId()
			}
		}
		if ctx.Err() != nil {
			return
		}
		f.t.mu.Lock()
		f.t.reconnects++
		f.t.lastErr = err
		f.t.mu.Unlock()
		select {
		case <-ctx.Done():
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// acknowledge acknowledges the ack ids queued by one consumer until the
// queue is closed: at once when one call is out at a time, so each call
// carries every id that arrived while the previous one was out.
func (f *consumerFleet) acknowledge(ctx context.Context, client pb.OrderServiceClient, group string, acks <-chan string) {
	for id := range acks {
		ids := []string{id}
	more:
		for len(ids) < maxAckBatch {
			select {
			case id, ok := <-acks:
				if !ok {
					break more
				}
				ids = append(ids, id)
			default:
				break more
			}
		}
		t0 := time.Now()
		resp, err := client.AcknowledgeExpirations(ctx, &pb.AcknowledgeExpirationsRequest{GroupId: group, AckIds: ids})
		f.t.acked(ids, time.Since(t0), resp, err)
	}
}

// maxAckBatch is the most ack ids one AcknowledgeExpirations call takes.
const maxAckBatch = 1000

// wait waits until every tracked event reached the group or the bound
// passes.
func (f *consumerFleet) wait(bound time.Time) {
	select {
	case <-f.t.done:
	case <-time.After(time.Until(bound)):
	}
}

// drain waits up to d for every delivery's acknowledgement to be answered,
// and reports whether they were.
func (f *consumerFleet) drain(d time.Duration) bool {
	until := time.Now().Add(d)
	for !f.t.settled() {
		if time.Now().After(until) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

// stop ends the streams, lets the acknowledgers send what was queued (for
// 10 s at most), and closes the connections. It may be called again.
func (f *consumerFleet) stop() {
	f.once.Do(func() {
		f.cancel()
		cut := time.AfterFunc(10*time.Second, f.ackStop)
		f.wg.Wait()
		cut.Stop()
		f.ackStop()
		closeAll(f.conns)
	})
}

// result is the group's deliveries as a lateResult: got and dups count
// orders, and an event that never arrived counts as later than the wait.
func (f *consumerFleet) result() lateResult {
	t := f.t
	t.mu.Lock()
	defer t.mu.Unlock()
	res := lateResult{want: t.n, got: t.got, dups: t.repeats, reconnects: t.reconnects, lastErr: t.lastErr}
	late := append([]time.Duration(nil), t.late...)
	claim := append([]time.Duration(nil), t.claim...)
	for range t.n - t.got {
		late = append(late, never)
		claim = append(claim, never)
	}
	res.late, res.claim = summarize(late), summarize(claim)
	return res
}
