package redisstore_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/orderexpiry/orderexpiry/internal/order"
	"github.com/orderexpiry/orderexpiry/internal/redisstore"
	"github.com/orderexpiry/orderexpiry/internal/redistest"
)

// TestNewSentinelClientInput checks what NewSentinelClient makes of its
// input: Redis's password and db from the URL, TLS from rediss://, and for
// input it cannot use an error that names what to fix and repeats no
// password.
func TestNewSentinelClientInput(t *testing.T) {
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Run("accepted", func(t *testing.T) {
		tests := []struct {
			name     string
			so       redisstore.SentinelOptions
			password string
			db       int
			tls      bool
		}{
			{name: "addresses", so: redisstore.SentinelOptions{Addrs: "127.0.0.1:26379, 127.0.0.1:26380", Master: "m"}},
			{name: "URL", so: redisstore.SentinelOptions{Addrs: "redis://:s3cret@127.0.0.1:26379/2?addr=127.0.0.1:26380", Master: "m"}, password: "s3cret", db: 2},
			{name: "URL naming the master", so: redisstore.SentinelOptions{Addrs: "redis://127.0.0.1:26379?master_name=m"}},
			{name: "TLS", so: redisstore.SentinelOptions{Addrs: "rediss://:s3cret@sentinel-1:26379?addr=sentinel-2:26379", Master: "m"}, password: "s3cret", tls: true},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				rdb, err := redisstore.NewSentinelClient(tt.so, redisstore.TLSFiles{})
				if err != nil {
					t.Fatal(err)
				}
				defer rdb.Close()
				o := rdb.Options()
				if o.Password != tt.password || o.DB != tt.db || (o.TLSConfig != nil) != tt.tls {
					t.Errorf("password %q, db %d, TLS %v; want %q, %d, %v", o.Password, o.DB, o.TLSConfig != nil, tt.password, tt.db, tt.tls)
				}
				if o.TLSConfig != nil && o.TLSConfig.ServerName != "" {
					t.Errorf("TLS server name %q: each connection must check the host it dials", o.TLSConfig.ServerName)
				}
			})
		}
	})
	tests := []struct {
		name  string
		so    redisstore.SentinelOptions
		files redisstore.TLSFiles
		want  string
	}{
		{name: "not host:port", so: redisstore.SentinelOptions{Addrs: "127.0.0.1:26379,sentinel-2", Master: "m"}, want: `REDIS_SENTINEL_ADDRS: "sentinel-2" is not a host:port`},
		{name: "empty address", so: redisstore.SentinelOptions{Addrs: "127.0.0.1:26379,", Master: "m"}, want: "is not a host:port"},
		{name: "no master", so: redisstore.SentinelOptions{Addrs: "127.0.0.1:26379"}, want: "REDIS_SENTINEL_MASTER is not set"},
		{name: "two masters", so: redisstore.SentinelOptions{Addrs: "redis://127.0.0.1:26379?master_name=a", Master: "b"}, want: "give one"},
		{name: "password in the query", so: redisstore.SentinelOptions{Addrs: "redis://:s3cret@127.0.0.1:26379?password=s3cret", Master: "m"}, want: "as the URL's user info"},
		{name: "bad URL", so: redisstore.SentinelOptions{Addrs: "redis://:s3cret@127.0.0.1:port", Master: "m"}, want: "REDIS_SENTINEL_ADDRS is not a valid"},
		{name: "unknown option", so: redisstore.SentinelOptions{Addrs: "redis://:s3cret@127.0.0.1:26379?colour=red", Master: "m"}, want: "colour"},
		{name: "CA without TLS", so: redisstore.SentinelOptions{Addrs: "redis://127.0.0.1:26379", Master: "m"}, files: redisstore.TLSFiles{CA: ca}, want: "not a rediss:// URL"},
		{name: "CA that is no certificate", so: redisstore.SentinelOptions{Addrs: "rediss://127.0.0.1:26379", Master: "m"}, files: redisstore.TLSFiles{CA: ca}, want: "holds no PEM certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rdb, err := redisstore.NewSentinelClient(tt.so, tt.files)
			if err == nil {
				rdb.Close()
				t.Fatalf("NewSentinelClient(%+v) succeeded; want an error containing %q", tt.so, tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "s3cret") {
				t.Errorf("error %q; want one containing %q, without the password", err, tt.want)
			}
		})
	}
}

// TestSentinelFailoverFollowed runs the store on a master with two
// replicas under three sentinels: writes wait for a replica, and after the
// master is killed the store follows the new one: an order acknowledged
// before the kill expires there on time, checkouts work again, and the
// subscription and keyspace events are up on the new master.
func TestSentinelFailoverFollowed(t *testing.T) {
	if testing.Short() {
		t.Skip("Sentinel failover: skipped with -short")
	}
	sn := redistest.StartSentinel(t, 2, 3, "--requirepass", "pw")
	first := sn.Master(t)
	addrs := strings.Split(sn.Addrs(), ",")
	rdb, err := redisstore.NewSentinelClient(redisstore.SentinelOptions{
		Addrs:    "redis://:pw@" + addrs[0] + "?addr=" + addrs[1] + "&addr=" + addrs[2],
		Master:   redistest.SentinelMaster,
		Password: "pw",
	}, redisstore.TLSFiles{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.Close() })
	s := redisstore.New(rdb, redisstore.Options{Retention: time.Hour, Logger: testLogger(t), Sentinel: true, Durability: redisstore.DurabilityStrict})
	run(t, s)
	ctx := t.Context()
	waitUntil(t, 5*time.Second, "the store to count 2 replicas", func() bool {
		r, err := s.Replicas(ctx)
		return err == nil && r[0] == 2
	})

	// The first call loads the script (a NOSCRIPT, then a retry); the
	// count starts after it.
	if _, _, err := s.Checkout(ctx, "warm-up", time.Hour, nil); err != nil {
		t.Fatal(err)
	}
	waits := infoInt(t, first.Client(t), "commandstats", "cmdstat_wait", "calls")
	if _, _, err := s.Checkout(ctx, "before", 4*time.Second, nil); err != nil {
		t.Fatal(err)
	}
	if got := infoInt(t, first.Client(t), "commandstats", "cmdstat_wait", "calls"); got != waits+1 {
		t.Errorf("the master ran WAIT %d times for one checkout, want once", got-waits)
	}

	first.Kill()
	killed := time.Now()
	next := sn.WaitFailover(t, first)
	failedOver := time.Now()
	t.Logf("failover in %v", failedOver.Sub(killed).Round(time.Millisecond))
	admin := next.Client(t)

	// The store's next calls go to the new master.
	waitUntil(t, 10*time.Second, "a checkout on the new master", func() bool {
		_, _, err := s.Checkout(ctx, "after", time.Hour, nil)
		if err != nil && order.KindOf(err) != order.KindUnavailable {
			t.Fatalf("checkout after the failover: %v; want success or Unavailable", err)
		}
		return err == nil
	})
	if err := admin.HExists(ctx, "oe:{0}:pending", "after").Err(); err != nil {
		t.Fatal(err)
	}
	waitSubscribed(t, admin)

	// The order acknowledged before the kill expires on the new master,
	// once: on time, or within a second of the failover when it came due
	// while there was no master.
	evs := collect(t, s, order.Offset{}, 1)
	due := evs[0].Deadline
	if due.Before(failedOver) {
		due = failedOver
	}
	if evs[0].OrderID != "before" || evs[0].ExpiredAt.After(due.Add(time.Second)) {
		t.Errorf("events %v; want the expiry of the order acknowledged before the failover, by %v", evs, due.Add(time.Second))
	}
	// The sentinels point the other replica at the new master after the
	// failover, and it must resync before the master lists it online: on a
	// loaded machine that took more than 10 s.
	waitUntil(t, 30*time.Second, "the store to count the new master's replica", func() bool {
		r, err := s.Replicas(ctx)
		return err == nil && r[0] == 1
	})
}
