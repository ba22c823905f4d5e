package bench

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/redis/go-redis/v9"

	"github.com/orderexpiry/orderexpiry/internal/order"
	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// fanout runs stage 4: 1, 100 and 1,000 gRPC watchers on one service, each
// over its own connection, while fanRate orders expire per second for
// fanFor. Every watcher must get every event. The service's CPU per
// delivered message (one event to one watcher) is set beside Redis's own CPU
// per delivered message when PUBLISH fans the same number of events of the
// same size out to as many subscribers, each on a fresh redis-server of its
// own: the goal is at most 1.5× Redis's. Lateness is reported beside that of
// one watcher, without a goal: at 1,000 watchers it measures the load
// generator, which shares the two cores, more than the service.
func (r *runner) fanout(ctx context.Context) error {
	e, err := r.startEnv()
	if err != nil {
		return err
	}
	defer e.stop()
	n := int(float64(r.sz.fanRate) * r.sz.fanFor.Seconds())
	rdb := e.redis.Client()
	defer rdb.Close()
	var one lateResult
	for i, k := range r.sz.watchers {
		prefix := fmt.Sprintf("f%d-", k)
		r.logf("  %d watchers, %d orders due over %s", k, n, r.sz.fanFor)
		g, err := startWatchers(ctx, e.svc.GRPCAddr, k, prefix, n)
		if err != nil {
			return err
		}
		start := time.Now().Add(2 * time.Second)
		last := start.Add(r.sz.fanFor)
		if _, err := checkoutAll(ctx, e.clients, r.sz.callers, n, func(i int) string { return prefix + strconv.Itoa(i) }, until(start, r.sz.fanFor, n)); err != nil {
			g.stop()
			return err
		}
		var prof *profiling
		if i == len(r.sz.watchers)-1 {
			prof = r.profile(e.svc, fmt.Sprintf("fanout-%d", k), start.Add(-100*time.Millisecond))
		}
		time.Sleep(time.Until(start))
		cpu, stats := e.cpu(), readRedisStats(ctx, rdb)
		g.wait(last.Add(r.sz.svcWait))
		waited := time.Since(last)
		r.t.note("4: %d watchers: %s", k, readRedisStats(ctx, rdb).since(stats))
		use := e.cpuUsed(cpu, 0)
		r.logf("    %s", use)
		r.t.note("4: %d watchers, from the first deadline until the last event: %s", k, use)
		g.stop()
		prof.wait()
		if err := e.exited(); err != nil {
			return err
		}
		res := watchResult(g.ws)
		res.waited = waited
		complete := 0
		for _, w := range g.ws {
			if w.got == w.n {
				complete++
			}
		}
		if i == 0 {
			one = res
		}
		r.logf("    delivered %d/%d, p50 %s, p99 %s, max %s, %d reconnects", res.got, res.want, res.fmt(res.late.P50), res.fmt(res.late.P99), res.fmt(res.late.Max), res.reconnects)

		r.logf("  Redis PUBLISH to %d subscribers, %d messages over %s, on a fresh redis-server", k, n, r.sz.fanFor)
		pub, err := r.publishFanout(ctx, k, n, r.sz.fanFor)
		if err != nil {
			return fmt.Errorf("PUBLISH to %d subscribers: %w", k, err)
		}
		r.logf("    delivered %d/%d; redis %.2fs of CPU", pub.got, pub.want, pub.redis.Seconds())

		allIn := res.got == res.want && res.dups == 0
		stage := fmt.Sprintf("4 (%d)", k)
		r.t.add(row{stage, fmt.Sprintf("events delivered (%d watchers × %d)", k, n), count(res.got, res.want), count(pub.got, pub.want) + " PUBLISH", ratio(float64(res.got), float64(pub.got)), "all", yesNo(allIn)})
		svcPer, redisPer := perMessage(use.svc, res.got), perMessage(pub.redis, pub.got)
		goal, met := atMost(svcPer, redisPer, 1.5)
		r.t.add(row{stage, "CPU per delivered message", usPer(svcPer) + " service", usPer(redisPer) + " Redis PUBLISH", ratio(svcPer, redisPer), goal, verdict(met, allIn && pub.got == pub.want)})
		r.t.add(row{stage, "lateness p50", res.fmt(res.late.P50), one.fmt(one.late.P50) + " at 1", latRatio(res.late.P50, res.waited, one.late.P50, one.waited), "", ""})
		r.t.add(row{stage, "lateness p99", res.fmt(res.late.P99), one.fmt(one.late.P99) + " at 1", latRatio(res.late.P99, res.waited, one.late.P99, one.waited), "", ""})
		r.t.add(row{stage, "lateness max", res.fmt(res.late.Max), one.fmt(one.late.Max) + " at 1", latRatio(res.late.Max, res.waited, one.late.Max, one.waited), "", ""})
		r.t.note("4: %d watchers: %d of them got every event; %d duplicates; %d watch reconnects (last error: %v); claim lateness p99 %s",
			k, complete, res.dups, res.reconnects, res.lastErr, res.fmt(res.claim.P99))
		r.t.note("4: %d subscribers to Redis PUBLISH: %d of %d messages delivered (%d bytes each); %s", k, pub.got, pub.want, pub.size, pub.cpu)
	}
	return nil
}

// perMessage is CPU per delivered message, in microseconds; 0 when none
// was delivered.
func perMessage(cpu time.Duration, messages int) float64 {
	if messages <= 0 {
		return 0
	}
	return float64(cpu) / float64(messages) / 1e3
}

// usPer formats microseconds with three significant digits or more.
func usPer(us float64) string {
	if us >= 100 {
		return fmt.Sprintf("%.0f µs", us)
	}
	return fmt.Sprintf("%.3g µs", us)
}

// pubResult is what the PUBLISH baseline measured.
type pubResult struct {
	want, got int
	size      int           // bytes of a message
	redis     time.Duration // redis-server's CPU over the window
	cpu       string        // the window's CPU, every process
}

// publishFanout is the baseline of stage 4: on a fresh redis-server, k
// go-redis subscribers (one connection each) on one channel, and n messages
// PUBLISHed to it at an even pace over spread, each an ExpirationEvent of the
// same fields as the service's, marshalled. It measures the redis-server
// process's CPU (from /proc) from the first PUBLISH until every subscriber
// has every message or the wait after the last one passes.
func (r *runner) publishFanout(ctx context.Context, k, n int, spread time.Duration) (pubResult, error) {
	rd, err := startRedis(r.dir)
	if err != nil {
		return pubResult{}, err
	}
	defer rd.Stop()
	rdb := rd.Client()
	defer rdb.Close()
	const channel = "expirations"

	var got atomic.Int64
	var complete sync.WaitGroup // one per subscriber, done when it has all n
	var wg sync.WaitGroup
	var subs []*redis.PubSub
	// A subscriber blocked in a read does not see its context end: closing
	// its connection ends it.
	defer func() {
		for _, ps := range subs {
			ps.Close()
		}
		wg.Wait()
	}()
	for range k {
		ps := rdb.Subscribe(ctx, channel)
		subs = append(subs, ps)
		if _, err := ps.Receive(ctx); err != nil {
			return pubResult{}, err
		}
		complete.Add(1)
		wg.Go(func() {
			mine := 0
			for {
				if _, err := ps.ReceiveMessage(ctx); err != nil {
					return
				}
				got.Add(1)
				if mine++; mine == n {
					complete.Done()
				}
			}
		})
	}
	if subs, err := rdb.PubSubNumSub(ctx, channel).Result(); err != nil || subs[channel] != int64(k) {
		return pubResult{}, fmt.Errorf("PUBSUB NUMSUB %s = %v (%v), want %d", channel, subs[channel], err, k)
	}

	msgs := make([][]byte, n)
	start := time.Now().Add(200 * time.Millisecond)
	for i := range msgs {
		at := start.Add(time.Duration(int64(spread) * int64(i) / int64(n)))
		ev := &pb.ExpirationEvent{Cursor: order.Offset{Ms: uint64(at.UnixMilli()), Seq: uint64(i)}.String(),
			OrderId: fmt.Sprintf("f%d-%d", k, i), Deadline: timestamppb.New(at), ExpiredAt: timestamppb.New(at.Add(time.Millisecond))}
		if msgs[i], err = proto.Marshal(ev); err != nil {
			return pubResult{}, err
		}
	}
	all := make(chan struct{})
	go func() { complete.Wait(); close(all) }()

	time.Sleep(time.Until(start))
	redis0, gen0, busy0, t0 := cpuTime(rd.PID()), selfCPU(), machineBusy(), time.Now()
	for i, m := range msgs {
		time.Sleep(time.Until(start.Add(time.Duration(int64(spread) * int64(i) / int64(n)))))
		if err := rdb.Publish(ctx, channel, m).Err(); err != nil {
			return pubResult{}, err
		}
	}
	select {
	case <-all:
	case <-time.After(r.sz.svcWait):
	}
	wall, redisCPU, gen := time.Since(t0), cpuTime(rd.PID())-redis0, selfCPU()-gen0
	others := max(machineBusy()-busy0-redisCPU-gen, 0)
	return pubResult{want: k * n, got: int(got.Load()), size: len(msgs[0]), redis: redisCPU,
		cpu: fmt.Sprintf("CPU over %s: redis %.2fs, load generator (publisher and subscribers) %.2fs, other processes %.2fs",
			wall.Round(10*time.Millisecond), redisCPU.Seconds(), gen.Seconds(), others.Seconds())}, nil
}
