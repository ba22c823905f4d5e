package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/orderexpiry/orderexpiry/internal/order"
	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// follower is a watcher as its users write one: it streams expirations and,
// whenever the stream ends, resumes after the cursor of the last event it
// received, on whichever replica pick gives it.
type follower struct {
	mu      sync.Mutex
	events  []*pb.ExpirationEvent
	ends    map[codes.Code]int // why streams ended
	changed chan struct{}      // closed and replaced on every event
	done    chan struct{}
}

// follow starts a follower that begins after the cursor ("0-0": the whole
// retained log) and runs until the test ends.
func follow(t *testing.T, pick func() *server, after string) *follower {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	f := followUntil(ctx, pick, after)
	t.Cleanup(func() {
		cancel()
		<-f.done
	})
	return f
}

// followUntil starts a follower that runs until ctx is done; then f.done is
// closed.
func followUntil(ctx context.Context, pick func() *server, after string) *follower {
	f := &follower{ends: map[codes.Code]int{}, changed: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(f.done)
		cursor := after
		for ctx.Err() == nil {
			s := pick()
			if s == nil {
				time.Sleep(50 * time.Millisecond)
				continue
			}
			err := f.stream(ctx, s, &cursor)
			if ctx.Err() != nil {
				return
			}
			f.mu.Lock()
			f.ends[status.Code(err)]++
			f.mu.Unlock()
			time.Sleep(20 * time.Millisecond)
		}
	}()
	return f
}

func (f *follower) stream(ctx context.Context, s *server, cursor *string) error {
	stream, err := s.Client.WatchExpirations(ctx, &pb.WatchExpirationsRequest{AfterCursor: *cursor})
	if err != nil {
		return err
	}
	for {
		ev, err := stream.Recv()
		if err != nil {
			return err
		}
		f.mu.Lock()
		f.events = append(f.events, ev)
		close(f.changed)
		f.changed = make(chan struct{})
		f.mu.Unlock()
		*cursor = ev.GetCursor()
	}
}

// received returns a copy of what the follower has received so far.
func (f *follower) received() []*pb.ExpirationEvent {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.events)
}

// waitFor waits until the follower has received n events.
func (f *follower) waitFor(t *testing.T, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		f.mu.Lock()
		got, changed := len(f.events), f.changed
		f.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("follower received %d of %d events within %s (stream ends: %v)", got, n, timeout, f.endsString())
		}
	}
}

func (f *follower) endsString() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return fmt.Sprint(f.ends)
}

// logEntry is one expiration of the log as the API shows it.
type logEntry struct {
	cursor, orderID string
}

// logQuiet is how long readLog waits, once the log holds every order it
// waits for, for events that are still on their way: a watch from "0-0"
// replays what is logged at once, so that a pause this long means it has
// reached the end of the log.
const logQuiet = 300 * time.Millisecond

// readLog reads the expiration log through the API, as a new watcher
// would: a follower that begins at "0-0" (the whole retained log) on the
// servers pick gives. It waits until the log holds an expiration for every
// order in acked, or timeout passes, and then until no more events come
// for logQuiet, and returns what the follower received.
func readLog(t *testing.T, pick func() *server, acked []string, timeout time.Duration) []logEntry {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	f := followUntil(ctx, pick, "0-0")
	defer func() {
		cancel()
		<-f.done
	}()
	missing := map[string]bool{}
	for _, id := range acked {
		missing[id] = true
	}
	deadline := time.Now().Add(timeout)
	for read := 0; len(missing) > 0; {
		f.mu.Lock()
		evs, changed := f.events[read:], f.changed
		read = len(f.events)
		f.mu.Unlock()
		for _, ev := range evs {
			delete(missing, ev.GetOrderId())
		}
		if len(missing) > 0 && !waitClosed(changed, time.Until(deadline)) {
			break
		}
	}
	for {
		f.mu.Lock()
		changed := f.changed
		f.mu.Unlock()
		if !waitClosed(changed, logQuiet) {
			break
		}
	}
	got := f.received()
	out := make([]logEntry, len(got))
	for i, ev := range got {
		out[i] = logEntry{cursor: ev.GetCursor(), orderID: ev.GetOrderId()}
	}
	return out
}

// waitClosed waits until c is closed, and reports false if d passed first.
func waitClosed(c <-chan struct{}, d time.Duration) bool {
	select {
	case <-c:
		return true
	case <-time.After(d):
		return false
	}
}

// ledger is what a fault scenario asserts: every acknowledged order expired
// exactly once in the log, and every follower received the log, in order.
type ledger struct {
	Events, Lost, Doubled int
	// log is the log the ledger was counted on.
	log []logEntry
}

// checkLedger reads the log through the API once it holds an expiration
// for every order in acked (or timeout passes), then counts what was lost
// and what was doubled, and checks that every follower received exactly
// the log.
func checkLedger(t *testing.T, pick func() *server, acked []string, followers []*follower, timeout time.Duration) ledger {
	t.Helper()
	log := readLog(t, pick, acked, timeout)
	l := tally(acked, log)
	for i, f := range followers {
		f.waitFor(t, len(log), timeout)
		got := f.received()
		if len(got) != len(log) {
			t.Errorf("follower %d received %d events; the log holds %d", i, len(got), len(log))
			continue
		}
		for j, ev := range got {
			if ev.GetCursor() != log[j].cursor || ev.GetOrderId() != log[j].orderID {
				t.Errorf("follower %d: event %d is %s %s; the log has %s %s there", i, j, ev.GetCursor(), ev.GetOrderId(), log[j].cursor, log[j].orderID)
				break
			}
		}
	}
	if l.Lost > 0 || l.Doubled > 0 {
		t.Errorf("lost %d, doubled %d of %d acknowledged orders", l.Lost, l.Doubled, len(acked))
	}
	return l
}

// checkLedgerByOrder is checkLedger for a fault that may make Redis lose
// the tail of its log (a crash with appendfsync everysec): the orders of
// the lost expirations expire again with new cursors, so a follower that
// had the first expirations holds cursors the log no longer does. It checks
// that every follower received every order of the log exactly once, in
// increasing cursors, and returns how many of the events the followers
// received are no longer in the log.
func checkLedgerByOrder(t *testing.T, pick func() *server, acked []string, followers []*follower, timeout time.Duration) (ledger, int) {
	t.Helper()
	log := readLog(t, pick, acked, timeout)
	l := tally(acked, log)
	inLog := map[string]bool{}
	for _, e := range log {
		inLog[e.cursor] = true
	}
	gone := 0
	for i, f := range followers {
		deadline := time.Now().Add(timeout)
		for {
			seen := map[string]int{}
			for _, ev := range f.received() {
				seen[ev.GetOrderId()]++
			}
			missing := 0
			for _, e := range log {
				if seen[e.orderID] == 0 {
					missing++
				}
			}
			if missing == 0 || time.Now().After(deadline) {
				if missing > 0 {
					t.Errorf("follower %d did not receive %d orders of the log", i, missing)
				}
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		got := f.received()
		seen := map[string]int{}
		var prev order.Offset
		for j, ev := range got {
			if seen[ev.GetOrderId()]++; seen[ev.GetOrderId()] == 2 {
				t.Errorf("follower %d received %s twice", i, ev.GetOrderId())
			}
			c, err := order.ParseOffset(ev.GetCursor())
			if err != nil || (j > 0 && !prev.Less(c)) {
				t.Errorf("follower %d: event %d has cursor %s after %s", i, j, ev.GetCursor(), prev)
			}
			prev = c
			if !inLog[ev.GetCursor()] {
				gone++
			}
		}
	}
	if l.Lost > 0 || l.Doubled > 0 {
		t.Errorf("lost %d, doubled %d of %d acknowledged orders", l.Lost, l.Doubled, len(acked))
	}
	return l, gone
}

// tally counts the acknowledged orders the log lost and the expirations it
// holds more than once.
func tally(acked []string, log []logEntry) ledger {
	count := map[string]int{}
	for _, e := range log {
		count[e.orderID]++
	}
	l := ledger{Events: len(log), log: log}
	for _, id := range acked {
		if count[id] == 0 {
			l.Lost++
		}
	}
	for _, n := range count {
		if n > 1 {
			l.Doubled += n - 1
		}
	}
	return l
}

// checkoutAll checks out orders, each due at the absolute time due(i)
// gives (asked once per order, so that retries and a busy machine cannot
// move it), in batches (BatchCheckout), so that a busy machine checks them
// out in time for their schedule, retrying each on UNAVAILABLE on the
// replica pick gives, and returns the ids that were acknowledged. An order
// that could not be checked out fails the test: a fault test that loses
// its orders before the fault tests nothing.
func checkoutAll(t *testing.T, pick func() *server, ids []string, due func(i int) time.Time) []string {
	t.Helper()
	acked, gaveUp := checkoutBatches(t, pick, ids, due)
	if len(gaveUp) > 0 {
		t.Errorf("%d of %d orders could not be checked out before their deadline (the first: %s)", len(gaveUp), len(ids), gaveUp[0])
	}
	return acked
}

// checkoutBatches checks out orders as checkoutAll does, and returns the
// ids acknowledged and those it gave up on, as checkoutEach does.
func checkoutBatches(t *testing.T, pick func() *server, ids []string, due func(i int) time.Time) (acked, gaveUp []string) {
	t.Helper()
	const batch, workers = 200, 4
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for first := w * batch; first < len(ids); first += workers * batch {
				var todo []int
				deadlines := map[int]time.Time{}
				for i := first; i < min(first+batch, len(ids)); i++ {
					todo = append(todo, i)
					deadlines[i] = due(i)
				}
				for len(todo) > 0 {
					now := time.Now()
					req := &pb.BatchCheckoutRequest{}
					var sent []int
					for _, i := range todo {
						if ttl := deadlines[i].Sub(now); ttl >= checkoutRetryMargin {
							req.Requests = append(req.Requests, &pb.CheckoutRequest{OrderId: ids[i], Deadline: timestamppb.New(deadlines[i])})
							sent = append(sent, i)
							continue
						}
						mu.Lock()
						gaveUp = append(gaveUp, ids[i])
						mu.Unlock()
					}
					todo = nil
					s := pick()
					if len(sent) == 0 || s == nil {
						todo = sent
						time.Sleep(50 * time.Millisecond)
						continue
					}
					ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
					res, err := s.Client.BatchCheckout(ctx, req)
					cancel()
					if err != nil {
						if c := status.Code(err); c != codes.Unavailable && c != codes.DeadlineExceeded {
							t.Errorf("batch checkout of %s…: %v", ids[sent[0]], err)
							return
						}
						todo = sent
						time.Sleep(20 * time.Millisecond)
						continue
					}
					for k, r := range res.GetResults() {
						i := sent[k]
						if r.GetError() == nil {
							mu.Lock()
							acked = append(acked, ids[i])
							mu.Unlock()
							continue
						}
						if c := codes.Code(r.GetError().GetCode()); c != codes.Unavailable {
							t.Errorf("checkout %s: %v %s", ids[i], c, r.GetError().GetMessage())
							continue
						}
						todo = append(todo, i)
					}
					if len(todo) > 0 {
						time.Sleep(20 * time.Millisecond)
					}
				}
			}
		})
	}
	wg.Wait()
	return acked, gaveUp
}

// checkoutRetryMargin is how long before its deadline checkoutEach makes
// its last attempt at an order.
const checkoutRetryMargin = 50 * time.Millisecond

// checkoutEach is checkoutAll for a scenario where a checkout may be
// refused for good (one sent during an outage): it returns the ids
// acknowledged and those it gave up on. Each attempt sends the order's
// deadline, fixed once, so that a retry is the same request (one with
// another ttl would be refused as ALREADY_EXISTS once an earlier attempt
// that answered UNAVAILABLE had in fact created the order). A retry is
// safe until the deadline: an order that a failed attempt may have created is due at the
// same deadline or later, so it is still pending and the retry finds it;
// after the deadline a retry could create a second order under the same
// id, so the attempts stop checkoutRetryMargin before it.
func checkoutEach(t *testing.T, pick func() *server, ids []string, due func(i int) time.Time) (acked, gaveUp []string) {
	t.Helper()
	var mu sync.Mutex
	var wg sync.WaitGroup
	const workers = 16
	for w := range workers {
		wg.Go(func() {
			for i := w; i < len(ids); i += workers {
				deadline := due(i)
				ok := false
				for {
					ttl := time.Until(deadline)
					if ttl < checkoutRetryMargin {
						break
					}
					s := pick()
					if s == nil {
						time.Sleep(50 * time.Millisecond)
						continue
					}
					ctx, cancel := context.WithTimeout(context.Background(), min(2*time.Second, ttl))
					_, err := s.Client.Checkout(ctx, &pb.CheckoutRequest{OrderId: ids[i], Deadline: timestamppb.New(deadline)})
					cancel()
					if err == nil {
						ok = true
						break
					}
					if c := status.Code(err); c != codes.Unavailable && c != codes.DeadlineExceeded {
						t.Errorf("checkout %s: %v", ids[i], err)
						break
					}
					time.Sleep(20 * time.Millisecond)
				}
				mu.Lock()
				if ok {
					acked = append(acked, ids[i])
				} else {
					gaveUp = append(gaveUp, ids[i])
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return acked, gaveUp
}

// latest returns the later of two times.
func latest(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// schedule fixes the deadlines of a burst of orders once: order i is due
// at first + i*step.
type schedule struct {
	first time.Time
	step  time.Duration
}

// due is order i's deadline, to the millisecond as the server keeps it, so
// that the test counts an order due after an instant exactly as its event's
// deadline says.
func (s schedule) due(i int) time.Time {
	return s.first.Add(time.Duration(i) * s.step).Truncate(time.Millisecond)
}

// dueAfter counts the orders of n due after at.
func (s schedule) dueAfter(n int, at time.Time) int {
	c := 0
	for i := range n {
		if s.due(i).After(at) {
			c++
		}
	}
	return c
}

// lateness returns the largest expired_at - deadline among events.
func lateness(events []*pb.ExpirationEvent) (p99, maxLate time.Duration) {
	if len(events) == 0 {
		return 0, 0
	}
	ls := make([]time.Duration, len(events))
	for i, ev := range events {
		ls[i] = ev.GetExpiredAt().AsTime().Sub(ev.GetDeadline().AsTime())
	}
	slices.Sort(ls)
	return ls[len(ls)*99/100], ls[len(ls)-1]
}

func ids(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = prefix + strconv.Itoa(i)
	}
	return out
}

// debugValue reads a number from one of the server's /debug/pprof pages.
// It needs a server process: in this one the goroutines and the heap would
// be the tests' too.
func (s *server) debugValue(t *testing.T, path string, re *regexp.Regexp) int {
	t.Helper()
	s.needProcess(t, "counting the server's goroutines or heap")
	if s.DebugAddr == "" {
		t.Fatal("the server was not started with -debug-addr")
	}
	resp, err := http.Get("http://" + s.DebugAddr + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	m := re.FindSubmatch(body)
	if m == nil {
		t.Fatalf("%s: no match for %s", path, re)
	}
	n, err := strconv.Atoi(string(m[1]))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

var (
	goroutinesRe = regexp.MustCompile(`goroutine profile: total (\d+)`)
	heapInuseRe  = regexp.MustCompile(`# HeapInuse = (\d+)`)
)

// goroutines is the server's number of goroutines.
func (s *server) goroutines(t *testing.T) int {
	return s.debugValue(t, "/debug/pprof/goroutine?debug=1", goroutinesRe)
}

// heapInuse is the server's heap in use after a collection.
func (s *server) heapInuse(t *testing.T) int {
	return s.debugValue(t, "/debug/pprof/heap?debug=1&gc=1", heapInuseRe)
}

// anyAlive returns a pick function that prefers servers[i] and otherwise
// takes the first live one.
func anyAlive(prefer int, servers ...*server) func() *server {
	return func() *server {
		if s := servers[prefer%len(servers)]; s.alive() {
			return s
		}
		for _, s := range servers {
			if s.alive() {
				return s
			}
		}
		return nil
	}
}

// roundRobin returns a pick function that spreads calls over live servers.
func roundRobin(servers ...*server) func() *server {
	var mu sync.Mutex
	next := 0
	return func() *server {
		mu.Lock()
		defer mu.Unlock()
		for range servers {
			s := servers[next%len(servers)]
			next++
			if s.alive() {
				return s
			}
		}
		return nil
	}
}
