package redisstore_test

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/orderexpiry/orderexpiry/internal/order"
	"github.com/orderexpiry/orderexpiry/internal/redisstore"
	"github.com/orderexpiry/orderexpiry/internal/redistest"
)

// TestEvictionPolicies: Ping fails, and checkouts are refused, on a Redis
// whose maxmemory-policy could evict the store's keys; noeviction, or no
// maxmemory at all, is safe.
func TestEvictionPolicies(t *testing.T) {
	tests := []struct {
		policy, maxmemory string
		safe              bool
	}{
		{"noeviction", "64mb", true},
		{"allkeys-lru", "0", true},
		{"allkeys-lru", "64mb", false},
		{"allkeys-lfu", "64mb", false},
		{"allkeys-random", "64mb", false},
		{"volatile-lru", "64mb", false},
		{"volatile-lfu", "64mb", false},
		{"volatile-random", "64mb", false},
		{"volatile-ttl", "64mb", false},
	}
	for _, tt := range tests {
		t.Run(tt.policy+"/"+tt.maxmemory, func(t *testing.T) {
			t.Parallel()
			srv := redistest.Start(t, "--maxmemory", tt.maxmemory, "--maxmemory-policy", tt.policy)
			s := newStore(t, srv)
			err := s.Ping(t.Context())
			_, _, cerr := s.Checkout(t.Context(), "o", time.Minute, nil)
			if tt.safe {
				if err != nil || cerr != nil || s.EvictionUnsafe() {
					t.Fatalf("Ping: %v, Checkout: %v, unsafe %v; want all fine", err, cerr, s.EvictionUnsafe())
				}
				return
			}
			for name, e := range map[string]error{"Ping": err, "Checkout": cerr} {
				msg := ""
				if e != nil {
					msg = e.Error()
				}
				if order.KindOf(e) != order.KindFailedPrecondition || !strings.Contains(msg, "maxmemory-policy "+tt.policy) || !strings.Contains(msg, "noeviction") {
					t.Errorf("%s: %v; want FailedPrecondition naming maxmemory-policy %s and noeviction", name, e, tt.policy)
				}
			}
			if !s.EvictionUnsafe() {
				t.Errorf("EvictionUnsafe is false")
			}
			if _, err := s.Get(t.Context(), "o"); order.KindOf(err) != order.KindNotFound {
				t.Errorf("Get(o) after the refused checkout: %v; want NotFound", err)
			}
		})
	}
}

// TestEvictionPolicyFollowed: on an unsafe Redis the store logs one error
// naming the setting, pending orders still expire, and once the policy is
// changed at runtime Ping and checkouts are fine again within a second; a
// policy made unsafe later is seen within the check period, and at once
// after a resubscription.
func TestEvictionPolicyFollowed(t *testing.T) {
	redisstore.SetPolicyEvery(t, 2*time.Second)
	srv := redistest.Start(t, "--maxmemory", "64mb", "--maxmemory-policy", "noeviction")
	admin := srv.Client(t)
	logs := &redistest.LockedBuffer{}
	s := redisstore.New(srv.Client(t), redisstore.Options{Retention: time.Hour, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	run(t, s)
	waitSubscribed(t, admin)
	ctx := t.Context()
	if err := s.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	after, err := s.Tail(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Checkout(ctx, "pending", 3*time.Second, nil); err != nil {
		t.Fatal(err)
	}

	// Made unsafe at runtime: seen within the period.
	must(t, admin.ConfigSet(ctx, "maxmemory-policy", "allkeys-lru").Err())
	changed := time.Now()
	waitUntil(t, 4*time.Second, "Ping to fail on allkeys-lru", func() bool { return s.Ping(ctx) != nil })
	t.Logf("allkeys-lru seen %v after it was set (period 2s)", time.Since(changed).Round(time.Millisecond))
	if _, _, err := s.Checkout(ctx, "refused", time.Minute, nil); order.KindOf(err) != order.KindFailedPrecondition {
		t.Errorf("Checkout on allkeys-lru: %v; want FailedPrecondition", err)
	}
	for range 3 {
		_ = s.Ping(ctx)
	}
	var errors []string
	for _, l := range logLines(logs) {
		if strings.Contains(l, "level=ERROR") {
			errors = append(errors, l)
		}
	}
	if len(errors) != 1 || !strings.Contains(errors[0], "maxmemory-policy allkeys-lru") || !strings.Contains(errors[0], "CONFIG SET maxmemory-policy noeviction") {
		t.Errorf("logged errors %q; want one naming maxmemory-policy allkeys-lru and the setting to change", errors)
	}

	// The order pending before still expires, on time.
	evs := collect(t, s, after, 1)
	if evs[0].OrderID != "pending" || evs[0].ExpiredAt.Sub(evs[0].Deadline) > 250*time.Millisecond {
		t.Errorf("event %v; want the expiry of the pending order within 250ms", evs[0])
	}

	// Fixed at runtime: fine again at the next Ping.
	must(t, admin.ConfigSet(ctx, "maxmemory-policy", "noeviction").Err())
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("Ping right after CONFIG SET maxmemory-policy noeviction: %v", err)
	}
	if _, _, err := s.Checkout(ctx, "accepted", time.Minute, nil); err != nil {
		t.Fatalf("Checkout on noeviction again: %v", err)
	}
	if !strings.Contains(logs.String(), "safe again") {
		t.Errorf("no line says the policy is safe again; logs:\n%s", logs)
	}

	// A resubscription (a restart, a failover) reads the policy at the
	// next Ping, without waiting for the period.
	redisstore.SetPolicyEvery(t, time.Hour)
	must(t, s.Ping(ctx))
	must(t, admin.ConfigSet(ctx, "maxmemory-policy", "volatile-lru").Err())
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("Ping read the policy again before its period: %v", err)
	}
	killSubscriber(t, admin)
	waitSubscribed(t, admin)
	waitUntil(t, 2*time.Second, "Ping to fail on volatile-lru after the resubscription", func() bool { return s.Ping(ctx) != nil })
}

// TestEvictionPolicyConfigRefused: where CONFIG is refused, Ping and
// checkouts go on, and one warning says what to verify by hand.
func TestEvictionPolicyConfigRefused(t *testing.T) {
	redisstore.SetPolicyEvery(t, 10*time.Millisecond)
	srv := redistest.Start(t, "--rename-command", "CONFIG", "", "--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru")
	logs := &redistest.LockedBuffer{}
	s := redisstore.New(srv.Client(t), redisstore.Options{Retention: time.Hour, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	for range 5 {
		if err := s.Ping(t.Context()); err != nil {
			t.Fatalf("Ping: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, _, err := s.Checkout(t.Context(), "o", time.Minute, nil); err != nil {
		t.Fatalf("Checkout: %v", err)
	}
	lines := logLines(logs)
	if len(lines) != 1 || !strings.Contains(lines[0], "level=WARN") || !strings.Contains(lines[0], "verify by hand") || !strings.Contains(lines[0], "noeviction") {
		t.Errorf("the store logged %q; want one warning saying to verify maxmemory-policy noeviction by hand", lines)
	}
}
