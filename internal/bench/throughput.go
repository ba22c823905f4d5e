package bench

import (
	"bytes"
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// loadResult is what a timed load measured.
type loadResult struct {
	calls, errs int
	rate        float64 // successful calls per second
	lat         dist
	firstErr    error
	cpu         string
}

// hammer runs `callers` concurrent callers of op for warmup+d and measures
// the calls that started after the warm-up.
func hammer(ctx context.Context, e *env, callers int, warmup, d time.Duration, op func(ctx context.Context, worker int) error) loadResult {
	begin := time.Now()
	from, to := begin.Add(warmup), begin.Add(warmup+d)
	lats := make([][]time.Duration, callers)
	errs := make([]int, callers)
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	for w := range callers {
		wg.Go(func() {
			for {
				t0 := time.Now()
				if !t0.Before(to) || ctx.Err() != nil {
					return
				}
				err := op(ctx, w)
				if t0.Before(from) {
					continue
				}
				if err != nil {
					errs[w]++
					once.Do(func() { firstErr = err })
					continue
				}
				lats[w] = append(lats[w], time.Since(t0))
			}
		})
	}
	time.Sleep(time.Until(from))
	cpu := e.cpu()
	time.Sleep(time.Until(to))
	cpuNote := e.cpuSince(cpu, 0)
	wg.Wait()
	var all []time.Duration
	res := loadResult{firstErr: firstErr, cpu: cpuNote}
	for w := range callers {
		all = append(all, lats[w]...)
		res.errs += errs[w]
	}
	res.calls = len(all)
	res.rate = float64(len(all)) / d.Seconds()
	res.lat = summarize(all)
	return res
}

// benchResult is what redis-benchmark reported.
type benchResult struct {
	rate     float64
	p50, p99 time.Duration
	cpu      string
}

// redisBenchmark runs redis-benchmark -t <test> -c <callers> -P 1 against
// the service's redis-server, on random keys of a 100,000 key space.
func (r *runner) redisBenchmark(ctx context.Context, e *env, test string) (benchResult, error) {
	host, port, _ := strings.Cut(e.redis.Addr, ":")
	args := []string{"-h", host, "-p", port, "-t", test, "-c", strconv.Itoa(r.sz.callers), "-P", "1",
		"-n", strconv.Itoa(r.sz.benchN), "-r", "100000", "--csv"}
	r.logf("  redis-benchmark %s", strings.Join(args, " "))
	cmd := exec.CommandContext(ctx, "redis-benchmark", args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cpu := e.cpu()
	out, err := cmd.Output()
	if err != nil {
		return benchResult{}, fmt.Errorf("redis-benchmark: %w: %s", err, stderr.String())
	}
	own := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	note := fmt.Sprintf("%s; redis-benchmark %.2fs", e.cpuSince(cpu, own), own.Seconds())
	recs, err := csv.NewReader(bytes.NewReader(out)).ReadAll()
	if err != nil || len(recs) < 2 || len(recs[0]) < 7 {
		return benchResult{}, fmt.Errorf("redis-benchmark: unexpected output %q", out)
	}
	col := map[string]string{}
	for i, h := range recs[0] {
		col[h] = recs[1][i]
	}
	rps, err1 := strconv.ParseFloat(col["rps"], 64)
	p50, err2 := strconv.ParseFloat(col["p50_latency_ms"], 64)
	p99, err3 := strconv.ParseFloat(col["p99_latency_ms"], 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return benchResult{}, fmt.Errorf("redis-benchmark: unexpected output %q", out)
	}
	return benchResult{rate: rps, p50: time.Duration(p50 * 1e6), p99: time.Duration(p99 * 1e6), cpu: note}, nil
}

// throughput runs stage 2: Checkout and GetOrder over gRPC and REST at 50
// concurrent callers, beside redis-benchmark SET and GET on the same
// redis-server.
func (r *runner) throughput(ctx context.Context) error {
	e, err := r.startEnv()
	if err != nil {
		return err
	}
	defer e.stop()
	httpc := &http.Client{Transport: &http.Transport{MaxIdleConns: 2 * r.sz.callers, MaxIdleConnsPerHost: 2 * r.sz.callers, DisableCompression: true}}
	defer httpc.CloseIdleConnections()
	base := "http://" + e.svc.HTTPAddr

	var seq atomic.Int64
	nextID := func() string { return "tp-" + strconv.FormatInt(seq.Add(1)-1, 10) }
	randID := func() string { return "tp-" + strconv.FormatInt(rand.Int64N(max(seq.Load(), 1)), 10) }
	ttl := durationpb.New(time.Hour)

	grpcCheckout := func(ctx context.Context, w int) error {
		resp, err := e.clients[w%len(e.clients)].Checkout(ctx, &pb.CheckoutRequest{OrderId: nextID(), Ttl: ttl})
		if err == nil && !resp.GetCreated() {
			err = fmt.Errorf("checkout %s: not created", resp.GetOrder().GetOrderId())
		}
		return err
	}
	restCheckout := func(ctx context.Context, _ int) error {
		return rest(ctx, httpc, http.MethodPost, base+"/v1/orders", `{"orderId":"`+nextID()+`","ttl":"3600s"}`)
	}
	grpcGet := func(ctx context.Context, w int) error {
		_, err := e.clients[w%len(e.clients)].GetOrder(ctx, &pb.GetOrderRequest{OrderId: randID()})
		return err
	}
	restGet := func(ctx context.Context, _ int) error {
		return rest(ctx, httpc, http.MethodGet, base+"/v1/orders/"+randID(), "")
	}

	rdb := e.redis.Client()
	defer rdb.Close()
	run := func(what string, op func(context.Context, int) error) loadResult {
		stats := readRedisStats(ctx, rdb)
		defer func() { r.t.note("2: %s: %s", what, readRedisStats(ctx, rdb).since(stats)) }()
		r.logf("  %s: %d callers for %s (after %s of warm-up)", what, r.sz.callers, r.sz.loadFor, r.sz.warmup)
		prof := r.profile(e.svc, "throughput-"+strings.ReplaceAll(what, " ", "-"), time.Now().Add(r.sz.warmup))
		res := hammer(ctx, e, r.sz.callers, r.sz.warmup, r.sz.loadFor, op)
		prof.wait()
		r.logf("    %.0f/s, p50 %s, p99 %s, %d errors; %s", res.rate, ms(res.lat.P50), ms(res.lat.P99), res.errs, res.cpu)
		if res.errs > 0 {
			r.t.note("2: %s had %d failed calls, the first: %v", what, res.errs, res.firstErr)
		}
		r.t.note("2: %s: %s", what, res.cpu)
		return res
	}

	set, err := r.redisBenchmark(ctx, e, "set")
	if err != nil {
		return err
	}
	r.t.note("2: redis-benchmark SET: %s", set.cpu)
	gck := run("gRPC Checkout", grpcCheckout)
	rck := run("REST Checkout", restCheckout)
	get, err := r.redisBenchmark(ctx, e, "get")
	if err != nil {
		return err
	}
	r.t.note("2: redis-benchmark GET: %s", get.cpu)
	gget := run("gRPC GetOrder", grpcGet)
	rget := run("REST GetOrder", restGet)

	add := func(name string, g, rs loadResult, b benchResult, bname string) {
		r.t.add(row{"2", name + " gRPC rate", rate(g.rate), rate(b.rate) + " " + bname, ratio(g.rate, b.rate), "≥ 0.5× " + bname, yesNo(g.rate >= 0.5*b.rate && g.errs == 0)})
		r.t.add(row{"2", name + " gRPC p50", ms(g.lat.P50), ms(b.p50) + " " + bname, ratio(float64(g.lat.P50), float64(b.p50)), "", ""})
		r.t.add(row{"2", name + " gRPC p99", ms(g.lat.P99), ms(b.p99) + " " + bname, ratio(float64(g.lat.P99), float64(b.p99)), "", ""})
		r.t.add(row{"2", name + " REST rate", rate(rs.rate), rate(g.rate) + " gRPC", ratio(rs.rate, g.rate), "≥ 0.5× gRPC", yesNo(rs.rate >= 0.5*g.rate && rs.errs == 0)})
		r.t.add(row{"2", name + " REST p50", ms(rs.lat.P50), ms(g.lat.P50) + " gRPC", ratio(float64(rs.lat.P50), float64(g.lat.P50)), "", ""})
		r.t.add(row{"2", name + " REST p99", ms(rs.lat.P99), ms(g.lat.P99) + " gRPC", ratio(float64(rs.lat.P99), float64(g.lat.P99)), "", ""})
	}
	add("Checkout", gck, rck, set, "SET")
	add("GetOrder", gget, rget, get, "GET")
	return nil
}

// rest makes one REST call and fails unless it answers 200.
func rest(ctx context.Context, c *http.Client, method, url, body string) error {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return err
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s: %s %s", method, url, resp.Status, raw)
	}
	return nil
}
