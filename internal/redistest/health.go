package redistest

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"
)

// Health is what a probe of the master the sentinels name saw over time:
// whether a write there reached a replica within a strict write's wait.
// Under Sentinel the service in strict mode answers a write UNAVAILABLE
// exactly when no replica confirms it in time; on a busy machine that
// happens beside the failover a test makes (a replica that resyncs again,
// a second failover when a sentinel misses the new master's pings), and a
// test tells those refusals from the service's own with Explains.
type Health struct {
	stop    context.CancelFunc
	done    chan struct{}
	mu      sync.Mutex
	samples []probe
}

// probe is one sample: when it ended, and why the master could not confirm
// a write ("" when it could).
type probe struct {
	at     time.Time
	reason string
}

// probeWait is how long the probe's WAIT waits for a replica: shorter than
// the service's (500 ms), so that a probe that passes means a service
// write would have passed too.
const probeWait = 400 * time.Millisecond

// RecordHealth probes the master every 50 ms until Stop: the node a live
// sentinel names must answer as master, and a write to it must be
// confirmed by a replica (WAIT 1) within probeWait.
func (sn *Sentinel) RecordHealth() *Health {
	ctx, cancel := context.WithCancel(context.Background())
	h := &Health{stop: cancel, done: make(chan struct{})}
	go func() {
		defer close(h.done)
		for ctx.Err() == nil {
			reason := sn.probe(ctx)
			if ctx.Err() != nil {
				return
			}
			h.mu.Lock()
			h.samples = append(h.samples, probe{at: time.Now(), reason: reason})
			h.mu.Unlock()
			select {
			case <-ctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	return h
}

// probe writes to the master and waits for a replica; it returns why that
// failed, or "".
func (sn *Sentinel) probe(ctx context.Context) string {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	m, err := sn.master(ctx)
	if err != nil {
		return err.Error()
	}
	pipe := sn.client(m).Pipeline()
	set := pipe.Set(ctx, "redistest:probe", "1", 0)
	wait := pipe.Do(ctx, "WAIT", 1, probeWait.Milliseconds())
	_, _ = pipe.Exec(ctx)
	if err := set.Err(); err != nil {
		return fmt.Sprintf("%s: SET: %v", m.Addr, err)
	}
	if n, err := wait.Int(); err != nil || n < 1 {
		return fmt.Sprintf("%s: WAIT 1 %d = %d, %v", m.Addr, probeWait.Milliseconds(), n, err)
	}
	return ""
}

// Stop ends the probes.
func (h *Health) Stop() {
	h.stop()
	<-h.done
}

// Explains reports whether a call made from at to end could be refused for
// want of a replica: whether it overlaps a span in which the master could
// not confirm a write, from the last good probe before it to slack after
// the first good probe after it (the time the service takes to find the
// master again and reconnect).
func (h *Health) Explains(at, end time.Time, slack time.Duration) bool {
	for _, s := range h.Unhealthy() {
		if at.Before(s.To.Add(slack)) && end.After(s.From) {
			return true
		}
	}
	return false
}

// Span is a stretch in which the master could not confirm a write: From the
// last good probe before it (or the first probe), To the first good probe
// after it (or the last probe), and the first reason seen.
type Span struct {
	From, To time.Time
	Reason   string
}

// Unhealthy returns the spans in which the master could not confirm a
// write.
func (h *Health) Unhealthy() []Span {
	h.mu.Lock()
	defer h.mu.Unlock()
	var spans []Span
	var open *Span
	for i, p := range h.samples {
		switch {
		case p.reason != "" && open == nil:
			from := p.at
			if i > 0 {
				from = h.samples[i-1].at
			}
			open = &Span{From: from, Reason: p.reason}
		case p.reason == "" && open != nil:
			open.To = p.at
			spans = append(spans, *open)
			open = nil
		}
	}
	if open != nil {
		open.To = h.samples[len(h.samples)-1].at
		spans = append(spans, *open)
	}
	return spans
}

// String lists the unhealthy spans relative to since, for a test's log.
func (h *Health) String(since time.Time) string {
	var b strings.Builder
	for _, s := range h.Unhealthy() {
		fmt.Fprintf(&b, "[%v, %v] %s; ", s.From.Sub(since).Round(time.Millisecond), s.To.Sub(since).Round(time.Millisecond), s.Reason)
	}
	return strings.TrimSuffix(b.String(), "; ")
}
