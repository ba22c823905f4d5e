package backoff

import (
	"context"
	"testing"
	"time"
)

func ms(v ...float64) []time.Duration {
	out := make([]time.Duration, len(v))
	for i, x := range v {
		out[i] = time.Duration(x * float64(time.Millisecond))
	}
	return out
}

func TestBackoff(t *testing.T) {
	var b Backoff
	for i, w := range ms(50, 100, 200, 400, 800, 1000, 1000) {
		if got := b.Next(); got != w {
			t.Fatalf("delay %d: got %s, want %s", i, got, w)
		}
	}
	b.Reset()
	if got := b.Next(); got != First {
		t.Fatalf("after Reset: got %s, want %s", got, First)
	}
}

// TestPolicyDelays checks the policies the module uses, with the spread
// drawn at its two ends and in the middle.
func TestPolicyDelays(t *testing.T) {
	at := func(r float64) func() float64 { return func() float64 { return r } }
	for _, c := range []struct {
		name string
		p    Policy
		want []time.Duration
	}{
		{"zero", Policy{}, ms(50, 100, 200, 400, 800, 1000, 1000)},
		{"slot move", Policy{First: 5 * time.Millisecond, Max: 100 * time.Millisecond}, ms(5, 10, 20, 40, 80, 100, 100)},
		{"grpc, low end", Policy{First: 250 * time.Millisecond, Max: 15 * time.Second, Multiplier: 1.6, Less: 0.2, More: 0.2, Rand: at(0)},
			ms(200, 320, 512, 819.2, 1310.72)},
		{"grpc, middle", Policy{First: 250 * time.Millisecond, Max: 15 * time.Second, Multiplier: 1.6, Less: 0.2, More: 0.2, Rand: at(0.5)},
			ms(250, 400, 640, 1024, 1638.4)},
		{"push, ack deadline 3s, high end", Policy{First: 500 * time.Millisecond, Max: 3 * time.Second, Less: 0.5, Rand: at(1)},
			ms(500, 1000, 2000, 3000, 3000)},
		{"push, ack deadline 3s, low end", Policy{First: 500 * time.Millisecond, Max: 3 * time.Second, Less: 0.5, Rand: at(0)},
			ms(250, 500, 1000, 1500, 1500)},
		{"a bound past the spread", Policy{First: time.Second, Max: 2 * time.Second, More: 0.5, Rand: at(1)}, ms(1500, 3000, 3000)},
		{"no bound", Policy{First: time.Second, Multiplier: 10}, ms(1000, 10000, 100000)},
	} {
		for n, w := range c.want {
			got := c.p.Delay(n)
			// Float arithmetic: within a microsecond.
			if diff := got - w; diff < -time.Microsecond || diff > time.Microsecond {
				t.Errorf("%s: Delay(%d) = %s, want %s", c.name, n, got, w)
			}
		}
	}
}

// TestPolicySpreadBounds: with the real random source, every delay lies
// within the policy's bounds, and they differ.
func TestPolicySpreadBounds(t *testing.T) {
	p := Policy{First: 500 * time.Millisecond, Max: 4 * time.Second, Less: 0.5, More: 0.25}
	seen := map[time.Duration]bool{}
	for n := range 200 {
		base := min(500*time.Millisecond<<min(n, 10), 4*time.Second)
		d := p.Delay(n)
		if d < base/2 || d > base+base/4 {
			t.Fatalf("Delay(%d) = %s, want from %s to %s", n, d, base/2, base+base/4)
		}
		seen[d] = true
	}
	if len(seen) < 100 {
		t.Errorf("200 delays took %d values: the spread is not random", len(seen))
	}
}

// TestPolicyLargeRetries: a retry count far past the bound neither
// overflows nor loops for long.
func TestPolicyLargeRetries(t *testing.T) {
	if d := (Policy{First: time.Millisecond, Max: time.Hour}).Delay(1 << 30); d != time.Hour {
		t.Errorf("Delay(1<<30) = %s, want 1h", d)
	}
	if d := (Policy{First: time.Hour, Multiplier: 1000}).Delay(1 << 30); d <= 0 {
		t.Errorf("unbounded Delay(1<<30) = %s, want a positive duration", d)
	}
}

func TestWaitEndsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	b := Backoff{Policy: Policy{First: time.Hour}}
	if b.Wait(ctx) {
		t.Fatal("Wait returned true for an ended context")
	}
}
