package e2e

// The linearizability test, after etcd's robustness tests: many clients call
// Checkout, GetOrder, CompleteOrder, CancelOrder and RescheduleOrder on a
// few order ids over three replicas while faults are injected (a replica
// killed with SIGKILL and replaced, Redis paused with SIGSTOP and resumed,
// Toxiproxy latency and connection resets between the replicas and Redis).
// Every call is recorded with its outcome, an error that may or may not have
// applied as unknown, and porcupine checks the history against the model of
// an order in linmodel_test.go. Then the expiration log is checked: one
// event for every order seen expired, none for an order seen completed or
// cancelled, none twice.
//
// LIN_SEED sets the seed (a number, or "random"); LIN_DURATION how long
// the clients run (15s by default). `make torture` runs it longer, over
// random seeds.

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2/client"
	"github.com/anishathalye/porcupine"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/orderexpiry/orderexpiry/internal/redistest"
	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

const (
	linClients = 20
	linIDs     = 200
	// linCallTimeout bounds each call, so that a call stuck behind a
	// paused Redis ends as unknown rather than holding its client.
	linCallTimeout = time.Second
	// linMaxTTL is the longest ttl a checkout or reschedule asks for.
	linMaxTTL = 3 * time.Second
	// linCheckTimeout bounds porcupine's search; a history it cannot
	// decide within it fails the test.
	linCheckTimeout = 2 * time.Minute
)

// linSeed returns the seed LIN_SEED names, 1 by default, and a new one for
// "random".
func linSeed(t *testing.T) uint64 {
	t.Helper()
	v := os.Getenv("LIN_SEED")
	switch v {
	case "":
		return 1
	case "random":
		return rand.Uint64() % 1_000_000_000
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		t.Fatalf("LIN_SEED=%q: give a number, or random", v)
	}
	return n
}

func linDuration(t *testing.T) time.Duration {
	t.Helper()
	v := os.Getenv("LIN_DURATION")
	if v == "" {
		return 15 * time.Second
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		t.Fatalf("LIN_DURATION=%q: give a duration such as 60s", v)
	}
	return d
}

// linRecorder collects the history of every client.
type linRecorder struct {
	mu  sync.Mutex
	ops []porcupine.Operation
	// Figures for the RESULT line.
	unknown, definite atomic.Int64
}

func (r *linRecorder) add(client int, in linInput, out linOutput, call, ret time.Time) {
	if out.Unknown {
		r.unknown.Add(1)
	} else {
		r.definite.Add(1)
	}
	op := porcupine.Operation{ClientId: client, Input: in, Output: out, Call: call.UnixNano(), Return: math.MaxInt64}
	if !out.Unknown {
		op.Return = ret.UnixNano()
	}
	r.mu.Lock()
	r.ops = append(r.ops, op)
	r.mu.Unlock()
}

// replicaSet is the replicas the clients call; a killed one is replaced.
type replicaSet struct {
	mu   sync.Mutex
	list []*server
	next int
}

// pick returns the next live replica, nil when none is.
func (rs *replicaSet) pick() *server {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	for range rs.list {
		s := rs.list[rs.next%len(rs.list)]
		rs.next++
		if s.alive() {
			return s
		}
	}
	return nil
}

func (rs *replicaSet) replace(i int, s *server) {
	rs.mu.Lock()
	rs.list[i] = s
	rs.mu.Unlock()
}

func (rs *replicaSet) get(i int) *server {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return rs.list[i]
}

// linCall makes one call and classifies its outcome.
func linCall(s *server, in linInput) linOutput {
	ctx, cancel := context.WithTimeout(context.Background(), linCallTimeout)
	defer cancel()
	var o *pb.Order
	var created bool
	var err error
	switch in.Kind {
	case linCheckout:
		var r *pb.CheckoutResponse
		r, err = s.Client.Checkout(ctx, &pb.CheckoutRequest{OrderId: in.ID, Ttl: ttl(time.Duration(in.TTL) * time.Millisecond), Metadata: map[string]string{"gen": in.Token}})
		o, created = r.GetOrder(), r.GetCreated()
	case linGet:
		o, err = s.Client.GetOrder(ctx, &pb.GetOrderRequest{OrderId: in.ID})
	case linComplete:
		o, err = s.Client.CompleteOrder(ctx, &pb.CompleteOrderRequest{OrderId: in.ID})
	case linCancel:
		o, err = s.Client.CancelOrder(ctx, &pb.CancelOrderRequest{OrderId: in.ID})
	case linReschedule:
		req := &pb.RescheduleOrderRequest{OrderId: in.ID}
		if in.At != 0 {
			req.NewDeadline = &pb.RescheduleOrderRequest_Deadline{Deadline: timestamppb.New(time.UnixMilli(in.At))}
		} else {
			req.NewDeadline = &pb.RescheduleOrderRequest_Ttl{Ttl: ttl(time.Duration(in.TTL) * time.Millisecond)}
		}
		if in.Expected != 0 {
			req.ExpectedDeadline = timestamppb.New(time.UnixMilli(in.Expected))
		}
		o, err = s.Client.RescheduleOrder(ctx, req)
	}
	switch c := status.Code(err); c {
	case codes.OK:
		return linOutput{Code: c, Created: created, Status: o.GetStatus(), Deadline: o.GetDeadline().AsTime().UnixMilli(), Token: o.GetMetadata()["gen"]}
	case codes.NotFound, codes.FailedPrecondition, codes.Aborted, codes.InvalidArgument:
		return linOutput{Code: c}
	default:
		// Unavailable, DeadlineExceeded and the like: the call may have
		// taken effect or not.
		return linOutput{Unknown: true, Code: c}
	}
}

// linClient runs one client's calls until stop is closed.
func linClient(t *testing.T, n int, seed uint64, rs *replicaSet, rec *linRecorder, stop <-chan struct{}) {
	rng := rand.New(rand.NewPCG(seed, uint64(n)))
	seen := map[string]int64{} // the last deadline this client saw per id
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		case <-time.After(time.Duration(rng.IntN(20)) * time.Millisecond):
		}
		in := linInput{ID: fmt.Sprint("lin-", rng.IntN(linIDs))}
		ttl := 500 + rng.Int64N(linMaxTTL.Milliseconds()-500)
		switch p := rng.IntN(100); {
		case p < 30:
			in.Kind, in.TTL, in.Token = linCheckout, ttl, fmt.Sprintf("c%d-%d", n, i)
		case p < 60:
			in.Kind = linGet
		case p < 70:
			in.Kind = linComplete
		case p < 80:
			in.Kind = linCancel
		default:
			in.Kind = linReschedule
			if rng.IntN(2) == 0 {
				in.TTL = ttl
			} else {
				// An absolute deadline, sometimes so near that it passes
				// before a slow call takes effect.
				in.At = time.Now().Add(time.Duration(50+rng.Int64N(linMaxTTL.Milliseconds()-50)) * time.Millisecond).UnixMilli()
			}
			if d, ok := seen[in.ID]; ok && rng.IntN(2) == 0 {
				in.Expected = d
			}
		}
		s := rs.pick()
		if s == nil {
			time.Sleep(20 * time.Millisecond)
			continue
		}
		call := time.Now()
		out := linCall(s, in)
		ret := time.Now()
		if out.Unknown && in.Kind == linGet {
			// A read that may or may not have happened tells nothing.
			rec.unknown.Add(1)
			continue
		}
		if !out.Unknown {
			switch out.Code {
			case codes.OK:
				seen[in.ID] = out.Deadline
			case codes.InvalidArgument:
				if in.Kind != linReschedule || in.At == 0 {
					t.Errorf("%s %s: InvalidArgument for a valid request", in.Kind, in.ID)
				}
			}
		}
		if out.Unknown {
			ret = time.Time{} // it may take effect at any time from now on
		}
		in.Lo, in.Hi = linWindow(call, ret)
		rec.add(n, in, out, call, ret)
	}
}

// TestLinearizability: see the top of this file.
func TestLinearizability(t *testing.T) {
	if testing.Short() {
		t.Skip("Toxiproxy and killed servers: skipped with -short")
	}
	seed, runFor := linSeed(t), linDuration(t)
	t.Logf("seed %d (rerun with LIN_SEED=%d), clients run for %s", seed, seed, runFor)
	rng := rand.New(rand.NewPCG(seed, 0))

	r := redistest.Start(t)
	tp := startToxiproxy(t)
	proxy, err := tp.CreateProxy("redis", "127.0.0.1:0", r.Addr)
	if err != nil {
		t.Fatal(err)
	}
	// Whatever happens, Redis is not left stopped.
	t.Cleanup(func() { _ = syscall.Kill(r.PID(), syscall.SIGCONT) })
	env := map[string]string{"REDIS_URL": "redis://" + proxy.Listen + "/0"}
	rs := &replicaSet{list: []*server{startProcess(t, env), startProcess(t, env), startProcess(t, env)}}

	rec := &linRecorder{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for n := range linClients {
		wg.Go(func() { linClient(t, n, seed, rs, rec, stop) })
	}

	// The faults, one at a time, in an order the seed chooses.
	faults := map[string]int{}
	end := time.Now().Add(runFor)
	for time.Now().Before(end) {
		time.Sleep(time.Duration(300+rng.IntN(700)) * time.Millisecond)
		switch f := rng.IntN(4); f {
		case 0:
			i := rng.IntN(3)
			if !rs.get(i).Stop(syscall.SIGKILL) {
				t.Fatalf("replica %d did not die", i)
			}
			faults["replica_sigkill"]++
			rs.replace(i, startProcess(t, env))
		case 1:
			if err := syscall.Kill(r.PID(), syscall.SIGSTOP); err != nil {
				t.Fatal(err)
			}
			time.Sleep(time.Duration(200+rng.IntN(1300)) * time.Millisecond)
			if err := syscall.Kill(r.PID(), syscall.SIGCONT); err != nil {
				t.Fatal(err)
			}
			faults["redis_sigstop"]++
		case 2:
			withToxic(t, proxy, "latency", "latency", toxiproxy.Attributes{"latency": 20 + rng.IntN(150), "jitter": 20}, time.Duration(500+rng.IntN(1500))*time.Millisecond)
			faults["latency"]++
		case 3:
			withToxic(t, proxy, "reset", "reset_peer", toxiproxy.Attributes{"timeout": 0}, time.Duration(100+rng.IntN(400))*time.Millisecond)
			faults["reset"]++
		}
	}
	close(stop)
	wg.Wait()
	workload := time.Since(end.Add(-runFor))

	// Every deadline passes; then one last read of each id, retried until
	// it answers, shows the final state of each id's last order.
	time.Sleep(linMaxTTL + 500*time.Millisecond)
	for i := range linIDs {
		in := linInput{Kind: linGet, ID: fmt.Sprint("lin-", i)}
		for try := 0; ; try++ {
			if s := rs.pick(); s != nil {
				call := time.Now()
				out := linCall(s, in)
				ret := time.Now()
				if !out.Unknown {
					in.Lo, in.Hi = linWindow(call, ret)
					rec.add(linClients, in, out, call, ret)
					break
				}
			}
			if try == 50 {
				t.Fatalf("reading %s after the faults: no answer in 50 tries", in.ID)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	model := linModel.ToModel()
	began := time.Now()
	res, info := porcupine.CheckOperationsVerbose(model, rec.ops, linCheckTimeout)
	checked := time.Since(began)
	if res != porcupine.Ok {
		path := filepath.Join(os.TempDir(), fmt.Sprintf("linearizability-%d.html", seed))
		if err := porcupine.VisualizePath(model, info, path); err != nil {
			t.Logf("visualizing the history: %v", err)
		}
		t.Errorf("seed %d: the history of %d operations is %s against the order model (rerun with LIN_SEED=%d); porcupine's view of it: %s",
			seed, len(rec.ops), res, seed, path)
		linExplain(t, model, rec.ops)
	}

	l := linCheckLog(t, rs, rec.ops)
	// calls counts every call, definite and unknown; ops, those in the
	// history (every call but the reads of unknown outcome, which tell
	// nothing); histories, the ids whose histories were checked.
	result(t, "seed=%d clients=%d ids=%d workload=%s calls=%d definite=%d unknown=%d ops=%d histories=%d check=%s faults=%v shown_expired=%d shown_completed=%d shown_cancelled=%d events=%d",
		seed, linClients, linIDs, workload.Round(time.Millisecond), rec.definite.Load()+rec.unknown.Load(), rec.definite.Load(), rec.unknown.Load(),
		len(rec.ops), len(model.Partition(rec.ops)), checked.Round(time.Millisecond), faults,
		l.expired, l.completed, l.cancelled, l.events)
	if t.Failed() {
		t.Logf("seed %d failed: rerun with LIN_SEED=%d", seed, seed)
	}
}

// linLog is what linCheckLog counted.
type linLog struct {
	expired, completed, cancelled, events int
}

// linCheckLog reads the whole expiration log through the API and checks it
// against what the calls showed of each order (each generation under an id
// is named by its checkout's token): exactly one event for an order that a
// response showed EXPIRED, none for one shown COMPLETED or CANCELLED, none
// twice, none for an order no checkout made.
func linCheckLog(t *testing.T, rs *replicaSet, ops []porcupine.Operation) linLog {
	t.Helper()
	fate := map[string]pb.OrderStatus{} // token -> closed status a response showed
	made := map[string]string{}         // token -> id, for every checkout
	var mustExpire int
	for _, op := range ops {
		in, out := op.Input.(linInput), op.Output.(linOutput)
		if in.Kind == linCheckout {
			made[in.Token] = in.ID
		}
		if out.Unknown || out.Code != codes.OK || out.Status == pending {
			continue
		}
		if was, ok := fate[out.Token]; ok && was != out.Status {
			t.Errorf("order %s gen %s was shown %s and %s", in.ID, out.Token, was, out.Status)
		}
		if _, ok := fate[out.Token]; !ok && out.Status == expired {
			mustExpire++
		}
		fate[out.Token] = out.Status
	}

	ctx, cancel := context.WithCancel(context.Background())
	f := followUntil(ctx, rs.pick, "0-0")
	defer func() {
		cancel()
		<-f.done
	}()
	deadline := time.Now().Add(20 * time.Second)
	for {
		f.mu.Lock()
		n, changed := len(f.events), f.changed
		f.mu.Unlock()
		if n >= mustExpire && !waitClosed(changed, logQuiet) {
			break
		}
		if time.Now().After(deadline) {
			break
		}
		waitClosed(changed, time.Until(deadline))
	}

	var l linLog
	events := map[string]int{}
	for _, ev := range f.received() {
		tok := ev.GetMetadata()["gen"]
		events[tok]++
		if id, ok := made[tok]; !ok || id != ev.GetOrderId() {
			t.Errorf("event %s for %s gen %q: no checkout made that order", ev.GetCursor(), ev.GetOrderId(), tok)
		}
	}
	l.events = len(f.received())
	for tok, n := range events {
		if n > 1 {
			t.Errorf("order gen %s expired %d times in the log", tok, n)
		}
	}
	for tok, st := range fate {
		switch st {
		case expired:
			l.expired++
			if events[tok] != 1 {
				t.Errorf("order %s gen %s was shown EXPIRED; the log has %d events for it, want 1", made[tok], tok, events[tok])
			}
		case completed, cancelled:
			if st == completed {
				l.completed++
			} else {
				l.cancelled++
			}
			if events[tok] != 0 {
				t.Errorf("order %s gen %s was shown %s; the log has %d events for it, want 0", made[tok], tok, st, events[tok])
			}
		}
	}
	return l
}

// linExplain logs the history of the first few order ids whose history is
// not linearizable, each operation with its window relative to the first
// call, so that a failure can be read without the visualization.
func linExplain(t *testing.T, model porcupine.Model, ops []porcupine.Operation) {
	t.Helper()
	shown := 0
	for _, part := range model.Partition(ops) {
		if shown == 3 {
			return
		}
		if porcupine.CheckOperationsTimeout(model, part, 10*time.Second) != porcupine.Illegal {
			continue
		}
		shown++
		slices.SortFunc(part, func(a, b porcupine.Operation) int { return cmp.Compare(a.Call, b.Call) })
		start := part[0].Call
		msg := fmt.Sprintf("the history of %s, not linearizable (times in ms from its first call, unix ms %d):", part[0].Input.(linInput).ID, start/1e6)
		for _, op := range part {
			ret := "..."
			if op.Return != math.MaxInt64 {
				ret = strconv.FormatInt((op.Return-start)/1e6, 10)
			}
			msg += fmt.Sprintf("\n  [%d, %s] client %d: %s", (op.Call-start)/1e6, ret, op.ClientId, model.DescribeOperation(op.Input, op.Output))
		}
		t.Log(msg)
	}
}
