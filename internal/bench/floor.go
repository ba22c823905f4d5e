package bench

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// floorStore names the floor's curve in the table and the plot.
const floorStore = "floor (Redis alone)"

// floorCurve measures the capacity stage's floor, Redis itself doing the
// least an expiry can cost it, at each rate, on a fresh redis-server of its
// own: `pending` keys SET … PX 2h stay, and at each rate the due keys,
// SET … PXAT <deadline> with pipelining and their deadlines spread evenly
// over dur, expire while a subscriber follows __keyevent@0__:expired
// (notify-keyspace-events Ex). A client reads each due key (EXISTS) in the
// first millisecond tick after its deadline has passed, which makes Redis
// expire it and publish its event at once rather than when its expiry cycle
// comes across it: one key deletion and one publish an order, the floor of
// issue 20. Lateness is the event's arrival minus the key's deadline, both
// on this machine's clock.
func (r *runner) floorCurve(ctx context.Context, pending int, rates []int, dur time.Duration) (capCurve, error) {
	c := capCurve{store: floorStore}
	if len(rates) == 0 {
		return c, nil
	}
	rd, err := startRedis(r.dir)
	if err != nil {
		return c, err
	}
	defer rd.Stop()
	rdb := rd.Client()
	defer rdb.Close()
	if err := rdb.ConfigSet(ctx, "notify-keyspace-events", "Ex").Err(); err != nil {
		return c, err
	}
	began := time.Now()
	if err := pipeSet(ctx, rdb, pending, func(i int) string { return "order:p-" + strconv.Itoa(i) },
		func(int) []any { return []any{"PX", (2 * time.Hour).Milliseconds()} }); err != nil {
		return c, err
	}
	setRate := float64(pending) / time.Since(began).Seconds()
	r.logf("  floor: %d pending keys (PX 2h) set with pipelining in %s", pending, time.Since(began).Round(time.Millisecond))
	if pending == 0 {
		setRate = 100_000
	}
	for k, rate := range rates {
		s, err := r.floorStep(ctx, rd, rdb, fmt.Sprintf("order:f%d-", k), rate, dur, setRate)
		if err != nil {
			return c, fmt.Errorf("%d/s: %w", rate, err)
		}
		c.steps = append(c.steps, s)
		r.logf("  floor %d/s: %d/%d events (%d twice), p50 %s, p99 %s; Redis CPU %s a key", rate, s.res.got, s.res.want, s.res.dups,
			s.res.fmt(s.res.late.P50), s.res.fmt(s.res.late.P99), micros(s.redisCPU))
	}
	return c, nil
}

// floorStep runs one rate of the floor: keys <prefix><i>.
func (r *runner) floorStep(ctx context.Context, rd *Redis, rdb *redis.Client, prefix string, rate int, dur time.Duration, setRate float64) (capStep, error) {
	due := int(float64(rate) * dur.Seconds())
	key := func(i int) string { return prefix + strconv.Itoa(i) }
	ev, err := subscribeExpired(ctx, rdb, prefix, due)
	if err != nil {
		return capStep{}, err
	}
	defer ev.stop()

	// A third of the pending keys' rate: the machine may be busier now.
	lead := checkoutLead(due, setRate/3)
	start := time.Now().Add(lead)
	deadlines := make([]int64, due) // Unix milliseconds
	for i := range deadlines {
		deadlines[i] = start.Add(time.Duration(int64(dur) * int64(i) / int64(due))).UnixMilli()
	}
	began := time.Now()
	if err := pipeSet(ctx, rdb, due, key, func(i int) []any { return []any{"PXAT", deadlines[i]} }); err != nil {
		return capStep{}, err
	}
	s := capStep{rate: rate, took: time.Since(began), gap: time.Until(start)}
	if s.gap < 0 {
		return capStep{}, fmt.Errorf("the due keys were set %s after the first deadline (the load was slower than planned)", -s.gap)
	}

	time.Sleep(time.Until(start))
	cpu, gen, busy, at := cpuTime(rd.PID()), selfCPU(), machineBusy(), time.Now()
	touchCtx, stopTouch := context.WithCancel(ctx)
	var touchErr error
	var touching sync.WaitGroup
	touching.Go(func() { touchErr = touchDue(touchCtx, rdb, key, deadlines) })
	last := time.UnixMilli(deadlines[due-1])
	select {
	case <-ev.all:
	case <-time.After(time.Until(last.Add(r.sz.svcWait))):
	case <-ctx.Done():
	}
	waited := time.Since(last)
	redisCPU, genCPU, wall := cpuTime(rd.PID())-cpu, selfCPU()-gen, time.Since(at)
	others := max(machineBusy()-busy-redisCPU-genCPU, 0)
	stopTouch()
	touching.Wait()
	ev.stop()
	if err := ctx.Err(); err != nil {
		return capStep{}, err
	}
	if touchErr != nil {
		return capStep{}, fmt.Errorf("reading the due keys: %w", touchErr)
	}

	late := make([]time.Duration, due)
	got := 0
	for i, t := range ev.recv {
		late[i] = never
		if !t.IsZero() {
			late[i] = t.Sub(time.UnixMilli(deadlines[i]))
			got++
		}
	}
	s.res = lateResult{want: due, got: got, dups: int(ev.dups.Load()), late: summarize(late), waited: waited}
	s.redisCPU = redisCPU / time.Duration(due)
	s.cpu = fmt.Sprintf("CPU over %s: redis %.2fs, load generator %.2fs, other processes %.2fs",
		wall.Round(10*time.Millisecond), redisCPU.Seconds(), genCPU.Seconds(), others.Seconds())
	return s, nil
}

// expiredEvents records when Redis's expired event of each key <prefix><i>,
// i < n, arrived.
type expiredEvents struct {
	recv []time.Time // zero: not arrived
	dups atomic.Int64
	all  chan struct{} // closed once every key's event arrived
	ps   *redis.PubSub
	wg   sync.WaitGroup
	once sync.Once
}

// subscribeExpired subscribes to the expired events of rdb's database 0
// (notify-keyspace-events must hold Ex) and records those of the keys
// <prefix><i>, i < n, until stop.
func subscribeExpired(ctx context.Context, rdb *redis.Client, prefix string, n int) (*expiredEvents, error) {
	ps := rdb.Subscribe(ctx, "__keyevent@0__:expired")
	if _, err := ps.Receive(ctx); err != nil {
		ps.Close()
		return nil, err
	}
	e := &expiredEvents{recv: make([]time.Time, n), all: make(chan struct{}), ps: ps}
	arrived := 0
	e.wg.Go(func() {
		for {
			msg, err := ps.ReceiveMessage(ctx)
			now := time.Now()
			if err != nil {
				return
			}
			rest, ok := strings.CutPrefix(msg.Payload, prefix)
			i, err := strconv.Atoi(rest)
			if !ok || err != nil || i < 0 || i >= n {
				continue
			}
			if !e.recv[i].IsZero() {
				e.dups.Add(1)
				continue
			}
			e.recv[i] = now
			if arrived++; arrived == n {
				close(e.all)
			}
		}
	})
	return e, nil
}

// stop ends the subscription; recv and dups are final after it.
func (e *expiredEvents) stop() {
	e.once.Do(func() {
		e.ps.Close()
		e.wg.Wait()
	})
}

// touchDue reads each key(i) with EXISTS once its deadline (Unix
// milliseconds, deadlines ascending) has passed, checking every
// millisecond, until every key was read and found gone, or ctx ends. Redis
// expires a key read after its deadline at once. A key still there (Redis
// counts a key expired only after its millisecond) is read again at the
// next tick.
func touchDue(ctx context.Context, rdb *redis.Client, key func(int) string, deadlines []int64) error {
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	next := 0
	var again []int
	for next < len(deadlines) || len(again) > 0 {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		now := time.Now().UnixMilli()
		batch := again
		for next < len(deadlines) && deadlines[next] < now {
			batch = append(batch, next)
			next++
		}
		if len(batch) == 0 {
			continue
		}
		pipe := rdb.Pipeline()
		cmds := make([]*redis.IntCmd, len(batch))
		for j, i := range batch {
			cmds[j] = pipe.Exists(ctx, key(i))
		}
		if _, err := pipe.Exec(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		again = nil
		for j, c := range cmds {
			if c.Val() > 0 {
				again = append(again, batch[j])
			}
		}
	}
	return nil
}

// pipeSet sets keys key(0)…key(n-1) to "1" with the SET options opts(i),
// 1,000 a pipelined round trip, from 4 connections.
func pipeSet(ctx context.Context, rdb *redis.Client, n int, key func(int) string, opts func(int) []any) error {
	const chunk = 1000
	_, err := callAll(ctx, 4, (n+chunk-1)/chunk, func(ctx context.Context, c int) error {
		pipe := rdb.Pipeline()
		for i := c * chunk; i < min(n, (c+1)*chunk); i++ {
			pipe.Do(ctx, append([]any{"SET", key(i), "1"}, opts(i)...)...)
		}
		_, err := pipe.Exec(ctx)
		return err
	})
	return err
}
