package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// dial opens n client connections to a gRPC address; callers share them
// round-robin.
func dial(addr string, n int) ([]*grpc.ClientConn, []pb.OrderServiceClient, error) {
	conns := make([]*grpc.ClientConn, n)
	clients := make([]pb.OrderServiceClient, n)
	for i := range conns {
		c, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			closeAll(conns)
			return nil, nil, err
		}
		conns[i], clients[i] = c, pb.NewOrderServiceClient(c)
	}
	return conns, clients, nil
}

func closeAll(conns []*grpc.ClientConn) {
	for _, c := range conns {
		if c != nil {
			c.Close()
		}
	}
}

// checkoutAll checks out orders id(0)…id(n-1) over gRPC with `callers`
// concurrent callers and no metadata. ttl(i) is asked at the moment of the
// call, so that a wanted deadline can be turned into a ttl then.
func checkoutAll(ctx context.Context, clients []pb.OrderServiceClient, callers, n int, id func(int) string, ttl func(int) time.Duration) (time.Duration, error) {
	return callAll(ctx, callers, n, func(ctx context.Context, i int) error {
		d := ttl(i)
		if d < time.Millisecond {
			return fmt.Errorf("checkout %s: its deadline passed before it was checked out (the load was slower than planned)", id(i))
		}
		resp, err := clients[i%len(clients)].Checkout(ctx, &pb.CheckoutRequest{OrderId: id(i), Ttl: durationpb.New(d)})
		if err != nil {
			return fmt.Errorf("checkout %s: %w", id(i), err)
		}
		if !resp.GetCreated() {
			return fmt.Errorf("checkout %s: the order already existed", id(i))
		}
		return nil
	})
}

// until returns a ttl function for orders whose wanted deadlines are
// start + i*spread/n, i in [0, n).
func until(start time.Time, spread time.Duration, n int) func(int) time.Duration {
	return func(i int) time.Duration {
		target := start.Add(time.Duration(int64(spread) * int64(i) / int64(n)))
		return time.Until(target).Round(time.Millisecond)
	}
}

// watcher follows WatchExpirations over its own connection and records how
// late each event of the tracked orders ("<prefix><i>", i in [0, n)) arrived:
// receive time minus the event's deadline, both from this machine's clock
// (the service takes deadlines from Redis TIME, on this machine too). A watch
// that ends with an error (RESOURCE_EXHAUSTED when it fell behind, or
// UNAVAILABLE) is resumed after the last cursor received, as a real client
// does.
type watcher struct {
	client pb.OrderServiceClient
	prefix string
	n      int

	ready chan struct{} // closed when the first watch has its response header
	done  chan struct{} // closed when every tracked order's event arrived

	// Written by run only; read after it returns.
	seen       []bool
	late       []time.Duration // receive - deadline
	claim      []time.Duration // expired_at - deadline: the service's own part
	index      []int           // the order of each of late and claim: i of "<prefix><i>"
	got, dups  int
	reconnects int
	lastErr    error
}

func newWatcher(client pb.OrderServiceClient, prefix string, n int) *watcher {
	return &watcher{client: client, prefix: prefix, n: n, ready: make(chan struct{}), done: make(chan struct{}),
		seen: make([]bool, n), late: make([]time.Duration, 0, n), claim: make([]time.Duration, 0, n)}
}

// run watches until ctx ends.
func (w *watcher) run(ctx context.Context) {
	cursor := ""
	readyOnce := sync.OnceFunc(func() { close(w.ready) })
	defer readyOnce()
	for ctx.Err() == nil {
		stream, err := w.client.WatchExpirations(ctx, &pb.WatchExpirationsRequest{AfterCursor: cursor})
		if err == nil {
			_, err = stream.Header()
		}
		if err == nil {
			readyOnce()
			for {
				ev, rerr := stream.Recv()
				now := time.Now()
				if rerr != nil {
					err = rerr
					break
				}
				cursor = ev.GetCursor()
				w.record(ev.GetOrderId(), now, ev.GetDeadline().AsTime(), ev.GetExpiredAt().AsTime())
			}
		}
		if ctx.Err() != nil {
			return
		}
		w.lastErr = err
		w.reconnects++
		select {
		case <-ctx.Done():
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func (w *watcher) record(id string, now, deadline, expiredAt time.Time) {
	rest, ok := strings.CutPrefix(id, w.prefix)
	if !ok {
		return
	}
	i, err := strconv.Atoi(rest)
	if err != nil || i < 0 || i >= w.n {
		return
	}
	if w.seen[i] {
		w.dups++
		return
	}
	w.seen[i] = true
	w.got++
	w.late = append(w.late, now.Sub(deadline))
	w.claim = append(w.claim, expiredAt.Sub(deadline))
	w.index = append(w.index, i)
	if w.got == w.n {
		close(w.done)
	}
}

// watchGroup runs watchers, each over its own connection.
type watchGroup struct {
	ws     []*watcher
	conns  []*grpc.ClientConn
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// startWatchers opens k watchers for the orders "<prefix><i>", i in [0, n),
// and waits until each has its response header.
func startWatchers(ctx context.Context, addr string, k int, prefix string, n int) (*watchGroup, error) {
	conns, clients, err := dial(addr, k)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	g := &watchGroup{conns: conns, cancel: cancel}
	for i := range k {
		w := newWatcher(clients[i], prefix, n)
		g.ws = append(g.ws, w)
		g.wg.Go(func() { w.run(ctx) })
	}
	timeout := time.After(30 * time.Second)
	for _, w := range g.ws {
		select {
		case <-w.ready:
		case <-timeout:
			g.stop()
			return nil, fmt.Errorf("%d watchers did not start within 30s", k)
		}
	}
	return g, nil
}

// wait waits until every watcher has every event or the bound passes, and
// reports whether all arrived.
func (g *watchGroup) wait(bound time.Time) bool {
	timeout := time.After(time.Until(bound))
	for _, w := range g.ws {
		select {
		case <-w.done:
		case <-timeout:
			return false
		}
	}
	return true
}

// stop ends the watchers and closes their connections.
func (g *watchGroup) stop() {
	g.cancel()
	g.wg.Wait()
	closeAll(g.conns)
}

// restEvent is the part of an ExpirationEvent's JSON that a REST watcher
// reads.
type restEvent struct {
	Cursor    string    `json:"cursor"`
	OrderID   string    `json:"orderId"`
	Deadline  time.Time `json:"deadline"`
	ExpiredAt time.Time `json:"expiredAt"`
}

// parseRESTEvent reads the fields of restEvent from a line of a REST watch.
// It finds them by hand and falls back on encoding/json for a line it cannot
// read so (an error, a string with an escape): the load generator shares
// the machine's two cores with the service and Redis, and json.Unmarshal
// was about 1.6 µs of its CPU an event, 0.16 s of the 0.4 s it used while
// 100,000 events arrived within a second (benchmark 1b), where this takes
// a quarter of that (BenchmarkParseRESTEvent).
func parseRESTEvent(line []byte) (restEvent, error) {
	cursor, ok1 := stringField(line, `"cursor":"`)
	id, ok2 := stringField(line, `"orderId":"`)
	deadline, ok3 := stringField(line, `"deadline":"`)
	expiredAt, ok4 := stringField(line, `"expiredAt":"`)
	if ok1 && ok2 && ok3 && ok4 {
		d, err1 := time.Parse(time.RFC3339Nano, deadline)
		x, err2 := time.Parse(time.RFC3339Nano, expiredAt)
		if err1 == nil && err2 == nil {
			return restEvent{Cursor: cursor, OrderID: id, Deadline: d, ExpiredAt: x}, nil
		}
	}
	var ev restEvent
	err := json.Unmarshal(line, &ev)
	return ev, err
}

// stringField returns the value of the first string field of a JSON object
// that key (`"name":"`) begins, when it holds no escape. Within a JSON
// string every quote is escaped, so key cannot match inside another value.
func stringField(line []byte, key string) (string, bool) {
	i := bytes.Index(line, []byte(key))
	if i < 0 {
		return "", false
	}
	rest := line[i+len(key):]
	j := bytes.IndexByte(rest, '"')
	if j < 0 || bytes.IndexByte(rest[:j], '\\') >= 0 {
		return "", false
	}
	return string(rest[:j]), true
}

// runREST watches as run does, but over REST: GET /v1/expirations:watch,
// one JSON event a line, as a web back end follows it. A watch that ends
// (an error line, or the connection closes) is resumed after the last
// cursor received.
func (w *watcher) runREST(ctx context.Context, httpAddr string) {
	cursor := ""
	readyOnce := sync.OnceFunc(func() { close(w.ready) })
	defer readyOnce()
	client := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	for ctx.Err() == nil {
		err := func() error {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet,
				"http://"+httpAddr+"/v1/expirations:watch?after_cursor="+url.QueryEscape(cursor), nil)
			if err != nil {
				return err
			}
			resp, err := client.Do(req)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("watch: HTTP %s", resp.Status)
			}
			readyOnce()
			sc := bufio.NewScanner(resp.Body)
			sc.Buffer(make([]byte, 64<<10), 1<<20)
			for sc.Scan() {
				now := time.Now()
				ev, err := parseRESTEvent(sc.Bytes())
				if err != nil {
					return fmt.Errorf("watch line %q: %w", sc.Text(), err)
				}
				if ev.OrderID == "" {
					return fmt.Errorf("watch ended: %s", sc.Text())
				}
				cursor = ev.Cursor
				w.record(ev.OrderID, now, ev.Deadline, ev.ExpiredAt)
			}
			if err := sc.Err(); err != nil {
				return err
			}
			return io.ErrUnexpectedEOF
		}()
		if ctx.Err() != nil {
			return
		}
		w.lastErr = err
		w.reconnects++
		select {
		case <-ctx.Done():
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// startRESTWatcher opens one REST watcher for the orders "<prefix><i>", i in
// [0, n), and waits until it has its response header.
func startRESTWatcher(ctx context.Context, httpAddr, prefix string, n int) (*watchGroup, error) {
	ctx, cancel := context.WithCancel(ctx)
	g := &watchGroup{cancel: cancel}
	w := newWatcher(nil, prefix, n)
	g.ws = append(g.ws, w)
	g.wg.Go(func() { w.runREST(ctx, httpAddr) })
	select {
	case <-w.ready:
	case <-time.After(30 * time.Second):
		g.stop()
		return nil, fmt.Errorf("the REST watcher did not start within 30s")
	}
	return g, nil
}
