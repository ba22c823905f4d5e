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

	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// loadResult is what a timed load measured.
type loadResult struct {
	calls, errs int
	rate        float64 // successful calls per second
	lat         dist
	lats        []time.Duration // each successful call's, for merging rounds
	d           time.Duration   // the measured window
	firstErr    error
	cpu         string
	use         cpuUse // the CPU over the measured window
}

// merge is the load of rounds run one after the other: their calls over
// their windows added up.
func merge(rounds []loadResult) loadResult {
	var m loadResult
	for _, r := range rounds {
		m.calls += r.calls
		m.errs += r.errs
		m.lats = append(m.lats, r.lats...)
		m.d += r.d
		if m.firstErr == nil {
			m.firstErr = r.firstErr
		}
		m.use.wall += r.use.wall
		m.use.svc += r.use.svc
		m.use.redis += r.use.redis
		m.use.gen += r.use.gen
		m.use.extra += r.use.extra
		m.use.others += r.use.others
	}
	if m.d > 0 {
		m.rate = float64(m.calls) / m.d.Seconds()
	}
	m.lat = summarize(m.lats)
	m.cpu = m.use.String()
	return m
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
	use := e.cpuUsed(cpu, 0)
	wg.Wait()
	var all []time.Duration
	res := loadResult{firstErr: firstErr, cpu: use.String(), use: use}
	for w := range callers {
		all = append(all, lats[w]...)
		res.errs += errs[w]
	}
	res.calls = len(all)
	res.rate = float64(len(all)) / d.Seconds()
	res.lat = summarize(all)
	res.lats, res.d = all, d
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

// The baselines of stage 2, each run by cmd/bench/baseline on its own fresh
// redis-server.
const (
	grpcBaseline = "minimal gRPC"
	restBaseline = "seeds' REST"
)

// contended is what one contender measured over one protocol, on its own
// fresh redis-server: Checkout, then GetOrder of the orders it created.
type contended struct {
	checkout, get loadResult
}

// throughput runs stage 2: Checkout and GetOrder at 50 concurrent callers,
// over gRPC beside the minimal gRPC server (one SET NX PX, one GET a call)
// and over REST beside the seeds' REST recipe (one SETNX with an expiry, one
// GET). Each round measures the gRPC pair, then the REST pair, each server
// on a fresh redis-server, the two of a pair taking turns (contendPair);
// then again, for sizes.rounds rounds. A rate's goal holds only if it holds
// in every round: the machine's speed drifts over minutes.
func (r *runner) throughput(ctx context.Context) error {
	// Redis alone, for scale: redis-benchmark SET and GET without
	// pipelining, on a fresh redis-server of their own.
	e, err := r.startBaselineEnv()
	if err != nil {
		return err
	}
	set, err := r.redisBenchmark(ctx, e, "set")
	var get benchResult
	if err == nil {
		get, err = r.redisBenchmark(ctx, e, "get")
	}
	e.stop()
	if err != nil {
		return err
	}
	r.t.note("2: redis-benchmark SET: %s", set.cpu)
	r.t.note("2: redis-benchmark GET: %s", get.cpu)

	rounds := make([][2][2]contended, r.sz.rounds) // [round][protocol][service, baseline]
	for i := range rounds {
		r.logf("  round %d of %d", i+1, r.sz.rounds)
		for p, proto := range []string{"gRPC", "REST"} {
			pair, err := r.contendPair(ctx, proto)
			if err != nil {
				return err
			}
			rounds[i][p] = pair
		}
	}
	// pick gathers one contender's result of one call over the rounds.
	pick := func(p, k int, call func(contended) loadResult) []loadResult {
		out := make([]loadResult, len(rounds))
		for i := range rounds {
			out[i] = call(rounds[i][p][k])
		}
		return out
	}
	checkoutOf := func(c contended) loadResult { return c.checkout }
	getOf := func(c contended) loadResult { return c.get }
	r.throughputRows("Checkout gRPC", pick(0, 0, checkoutOf), pick(0, 1, checkoutOf), grpcBaseline+" SET NX PX", true)
	r.throughputRows("Checkout REST", pick(1, 0, checkoutOf), pick(1, 1, checkoutOf), restBaseline+" SETNX", true)
	r.throughputRows("GetOrder gRPC", pick(0, 0, getOf), pick(0, 1, getOf), grpcBaseline+" GET", false)
	r.throughputRows("GetOrder REST", pick(1, 0, getOf), pick(1, 1, getOf), restBaseline+" GET", false)
	g, rs := merge(pick(0, 0, checkoutOf)), merge(pick(1, 0, checkoutOf))
	gGet, rsGet := merge(pick(0, 0, getOf)), merge(pick(1, 0, getOf))
	// The service beside Redis alone, and its REST path beside its gRPC
	// path, from the same run; no goals.
	r.t.add(row{"2", "Checkout gRPC rate beside SET", rate(g.rate), rate(set.rate) + " SET", ratio(g.rate, set.rate), "", ""})
	r.t.add(row{"2", "GetOrder gRPC rate beside GET", rate(gGet.rate), rate(get.rate) + " GET", ratio(gGet.rate, get.rate), "", ""})
	r.t.add(row{"2", "Checkout REST rate beside gRPC", rate(rs.rate), rate(g.rate) + " gRPC", ratio(rs.rate, g.rate), "", ""})
	r.t.add(row{"2", "GetOrder REST rate beside gRPC", rate(rsGet.rate), rate(gGet.rate) + " gRPC", ratio(rsGet.rate, gGet.rate), "", ""})
	return nil
}

// throughputRows adds a call's rows from its rounds: its rate over them
// all, and in the round where it fell furthest below the baseline (goal ≥
// 1.0× the baseline's in every round), p50, p99 (for Checkout, goal ≤ 1.2×
// the baseline's) and CPU per call.
func (r *runner) throughputRows(name string, svcRounds, baseRounds []loadResult, bname string, p99Goal bool) {
	svc, base := merge(svcRounds), merge(baseRounds)
	clean := svc.errs == 0 && base.errs == 0 && svc.calls > 0 && base.calls > 0
	worst, ratios := 0, make([]string, len(svcRounds))
	for i := range svcRounds {
		ratios[i] = ratio(svcRounds[i].rate, baseRounds[i].rate)
		if svcRounds[i].rate*baseRounds[worst].rate < svcRounds[worst].rate*baseRounds[i].rate {
			worst = i
		}
	}
	r.t.add(row{"2", name + " rate", rate(svc.rate), rate(base.rate) + " " + bname, ratio(svc.rate, base.rate), "", ""})
	w, wb := svcRounds[worst], baseRounds[worst]
	goal, met := atLeast(w.rate, wb.rate, 1.0)
	r.t.add(row{"2", fmt.Sprintf("%s rate, worst of %d rounds", name, len(svcRounds)), rate(w.rate), rate(wb.rate), ratio(w.rate, wb.rate), goal + " each round", verdict(met, clean)})
	r.t.note("2: %s rate, round by round against the baseline: %s", name, strings.Join(ratios, ", "))
	r.t.add(row{"2", name + " p50", ms(svc.lat.P50), ms(base.lat.P50), ratio(float64(svc.lat.P50), float64(base.lat.P50)), "", ""})
	goal, met = atMost(float64(svc.lat.P99), float64(base.lat.P99), 1.2)
	p99Met := verdict(met, clean)
	if !p99Goal {
		goal, p99Met = "", ""
	}
	r.t.add(row{"2", name + " p99", ms(svc.lat.P99), ms(base.lat.P99), ratio(float64(svc.lat.P99), float64(base.lat.P99)), goal, p99Met})
	r.t.add(row{"2", name + " CPU/call svc+redis+gen", svc.use.perCall(svc.calls), base.use.perCall(base.calls),
		ratio(float64(svc.use.total())/float64(max(svc.calls, 1)), float64(base.use.total())/float64(max(base.calls, 1))), "", ""})
}

// contender is one server of stage 2 on a fresh redis-server of its own:
// the service or a baseline, over one protocol, with its two calls.
type contender struct {
	what          string // "orderexpiry gRPC", "baseline minimal gRPC", ...
	e             *env
	httpc         *http.Client
	checkout, get func(ctx context.Context, worker int) error
}

func (r *runner) newContender(proto string, baseline bool) (*contender, error) {
	who, start := "orderexpiry", r.startEnv
	what := "orderexpiry " + proto
	if baseline {
		who, start = map[string]string{"gRPC": grpcBaseline, "REST": restBaseline}[proto], r.startBaselineEnv
		what = "baseline " + who
	}
	r.logf("  %s over %s, on a fresh redis-server", who, proto)
	e, err := start()
	if err != nil {
		return nil, err
	}
	c := &contender{what: what, e: e,
		httpc: &http.Client{Transport: &http.Transport{MaxIdleConns: 2 * r.sz.callers, MaxIdleConnsPerHost: 2 * r.sz.callers, DisableCompression: true}}}
	base := "http://" + e.svc.HTTPAddr

	var seq atomic.Int64
	nextID := func() string { return "tp-" + strconv.FormatInt(seq.Add(1)-1, 10) }
	randID := func() string { return "tp-" + strconv.FormatInt(rand.Int64N(max(seq.Load(), 1)), 10) }
	ttl := durationpb.New(time.Hour)

	switch proto {
	case "gRPC":
		// The same calls for the service and the gRPC baseline, which
		// implements Checkout and GetOrder of the same OrderService.
		c.checkout = func(ctx context.Context, w int) error {
			resp, err := e.clients[w%len(e.clients)].Checkout(ctx, &pb.CheckoutRequest{OrderId: nextID(), Ttl: ttl})
			if err == nil && !resp.GetCreated() {
				err = fmt.Errorf("checkout %s: not created", resp.GetOrder().GetOrderId())
			}
			return err
		}
		c.get = func(ctx context.Context, w int) error {
			_, err := e.clients[w%len(e.clients)].GetOrder(ctx, &pb.GetOrderRequest{OrderId: randID()})
			return err
		}
	default:
		// The service's REST body, or the seeds' recipe's {"id","expire"};
		// both read an order at the same path.
		body := func() string { return `{"orderId":"` + nextID() + `","ttl":"3600s"}` }
		if baseline {
			body = func() string { return `{"id":"` + nextID() + `","expire":3600}` }
		}
		c.checkout = func(ctx context.Context, _ int) error {
			return rest(ctx, c.httpc, http.MethodPost, base+"/v1/orders", body())
		}
		c.get = func(ctx context.Context, _ int) error {
			return rest(ctx, c.httpc, http.MethodGet, base+"/v1/orders/"+randID(), "")
		}
	}
	return c, nil
}

func (c *contender) close() {
	c.httpc.CloseIdleConnections()
	c.e.stop()
}

// contendPair measures the service and the baseline of one protocol, each
// on a fresh redis-server: Checkout, then GetOrder of random orders each
// created. The two take turns in slices of roundFor/slices (which goes
// first alternating), each after a short warm-up, so that both are
// measured over the same seconds: the machine's speed changes within
// seconds (the same work takes 45% longer in its slow spells), and
// windows measured one after the other compared those spells as much as
// the servers. The one not under load waits idle; its CPU shows among
// "other processes".
func (r *runner) contendPair(ctx context.Context, proto string) ([2]contended, error) {
	var cs [2]*contender
	for k := range cs {
		c, err := r.newContender(proto, k == 1)
		if err != nil {
			return [2]contended{}, err
		}
		defer c.close()
		cs[k] = c
	}
	turns := max(r.sz.slices, 1)
	slice := r.sz.roundFor / time.Duration(turns)
	measure := func(call string, op func(*contender) func(context.Context, int) error) [2]loadResult {
		var out [2]loadResult
		var parts [2][]loadResult
		var stats [2]redisStats
		rdbs := [2]*redis.Client{cs[0].e.redis.Client(), cs[1].e.redis.Client()}
		for k := range cs {
			defer rdbs[k].Close()
			stats[k] = readRedisStats(ctx, rdbs[k])
		}
		r.logf("    %s: %d callers, %d slices of %s each (after %s of warm-up, %s in later slices)",
			call, r.sz.callers, turns, slice, r.sz.warmup, sliceWarmup)
		prof := r.profile(cs[0].e.svc, "throughput-"+proto+"-"+call, time.Now().Add(r.sz.warmup))
		for s := range turns {
			for j := range cs {
				k := (s + j) % 2
				warm := sliceWarmup
				if s == 0 {
					warm = r.sz.warmup
				}
				parts[k] = append(parts[k], hammer(ctx, cs[k].e, r.sz.callers, warm, slice, op(cs[k])))
			}
		}
		prof.wait()
		for k, c := range cs {
			res := merge(parts[k])
			what := c.what + " " + call
			r.logf("      %s: %.0f/s, p50 %s, p99 %s, %d errors; %s", what, res.rate, ms(res.lat.P50), ms(res.lat.P99), res.errs, res.cpu)
			if res.errs > 0 {
				r.t.note("2: %s had %d failed calls, the first: %v", what, res.errs, res.firstErr)
			}
			r.t.note("2: %s: %s; per call (service + Redis + load generator) %s", what, res.cpu, res.use.perCall(res.calls))
			r.t.note("2: %s: %s", what, readRedisStats(ctx, rdbs[k]).since(stats[k]))
			out[k] = res
		}
		return out
	}
	checkouts := measure("Checkout", func(c *contender) func(context.Context, int) error { return c.checkout })
	gets := measure("GetOrder", func(c *contender) func(context.Context, int) error { return c.get })
	var out [2]contended
	for k, c := range cs {
		// The memory side of the service's GC setting (cmd/server's
		// gcPercentOnRedis).
		if kb, err := c.e.svc.Status("VmHWM"); err == nil {
			r.t.note("2: %s: peak resident memory over the %s calls %.1f MB", c.what, proto, float64(kb)/1024)
		}
		out[k] = contended{checkout: checkouts[k], get: gets[k]}
		if err := c.e.exited(); err != nil {
			return out, err
		}
	}
	return out, nil
}

// sliceWarmup is the warm-up of each of stage 2's slices after the first:
// calls that began within it are not counted, so that a slice does not
// count the turn of the load from the other contender.
const sliceWarmup = 100 * time.Millisecond

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
