package redistest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// SentinelMaster is the name the sentinels of StartSentinel know the master
// by.
const SentinelMaster = "orderexpiry"

// Sentinel is a master, its replicas and the redis-server --sentinel
// processes that watch them, all on loopback.
type Sentinel struct {
	// Nodes are the Redis servers: the first master, then its replicas.
	// Roles change with failovers: Master tells who is master now.
	Nodes []*Server
	// Sentinels are the sentinel processes.
	Sentinels []*Server

	byAddr   map[string]*Server
	password string
	// One client per node and per sentinel, for the checks here.
	clients   map[*Server]*redis.Client
	sentinels map[*Server]*redis.SentinelClient
}

// StartSentinel starts a master, replicas replicas of it and sentinels
// sentinels (a quorum of a majority), waits until every replica's link is up
// and every sentinel knows the replicas and the other sentinels, and stops
// them all at t.Cleanup. Extra args go to every Redis server (not to the
// sentinels); with "--requirepass", pw the replicas authenticate with pw
// and the sentinels with it to Redis, and the sentinels ask for pw too.
//
// The sentinels deem a master down after 1 s (down-after-milliseconds
// 1000) and retry a failover that did not end after 4 s (failover-timeout
// 2000), so that a master killed with Server.Kill is replaced within a few
// seconds. Like Start, it fails the test when redis-server is missing.
func StartSentinel(t testing.TB, replicas, sentinels int, args ...string) *Sentinel {
	t.Helper()
	if replicas < 1 || sentinels < 1 {
		t.Fatalf("redistest: Sentinel needs a replica and a sentinel at least, not %d and %d", replicas, sentinels)
	}
	sn := &Sentinel{byAddr: map[string]*Server{}, clients: map[*Server]*redis.Client{}, sentinels: map[*Server]*redis.SentinelClient{}}
	t.Cleanup(func() {
		for _, c := range sn.clients {
			_ = c.Close()
		}
		for _, c := range sn.sentinels {
			_ = c.Close()
		}
	})
	for i, a := range args {
		if a == "--requirepass" && i+1 < len(args) {
			sn.password = args[i+1]
		}
	}
	common := []string{"--repl-diskless-sync-delay", "0"}
	if sn.password != "" {
		common = append(common, "--masterauth", sn.password)
	}
	master := Start(t, append(common, args...)...)
	sn.add(master)
	host, port, _ := net.SplitHostPort(master.Addr)
	for range replicas {
		sn.add(Start(t, append(append(common, "--replicaof", host, port), args...)...))
	}
	sn.settle(t, func(ctx context.Context) error { return sn.replicasUp(ctx, master, replicas) })
	sn.startSentinels(t, master.Addr, replicas, sentinels)
	return sn
}

// startSentinels starts n sentinels that monitor the master at addr and
// waits until each knows its replicas and the other sentinels.
func (sn *Sentinel) startSentinels(t testing.TB, addr string, replicas, n int) {
	t.Helper()
	for range n {
		s := startSentinelProcess(t, addr, n/2+1, sn.password)
		sn.Sentinels = append(sn.Sentinels, s)
		sn.sentinels[s] = redis.NewSentinelClient(sn.options(s))
	}
	sn.settle(t, func(ctx context.Context) error {
		for _, s := range sn.Sentinels {
			m, err := sn.sentinelClient(s).Master(ctx, SentinelMaster).Result()
			if err != nil {
				return fmt.Errorf("sentinel %s: SENTINEL MASTER: %w", s.Addr, err)
			}
			if m["num-slaves"] != strconv.Itoa(replicas) || m["num-other-sentinels"] != strconv.Itoa(n-1) {
				return fmt.Errorf("sentinel %s knows %s replicas and %s other sentinels, want %d and %d",
					s.Addr, m["num-slaves"], m["num-other-sentinels"], replicas, n-1)
			}
		}
		return nil
	})
}

func (sn *Sentinel) add(s *Server) {
	sn.Nodes = append(sn.Nodes, s)
	sn.byAddr[s.Addr] = s
	sn.clients[s] = redis.NewClient(sn.options(s))
}

// StartSentinels starts n sentinels (a quorum of a majority) that monitor
// the master at addr as SentinelMaster, with the timings of StartSentinel,
// for a test that builds the master and its replicas itself (replicas that
// replicate through a proxy, say), and waits as StartSentinel does until
// each knows the master's replicas replicas and the other sentinels. They
// stop at t.Cleanup.
func StartSentinels(t testing.TB, addr string, replicas, n int) []*Server {
	t.Helper()
	sn := &Sentinel{sentinels: map[*Server]*redis.SentinelClient{}}
	t.Cleanup(func() {
		for _, c := range sn.sentinels {
			_ = c.Close()
		}
	})
	sn.startSentinels(t, addr, replicas, n)
	return sn.Sentinels
}

// startSentinelProcess starts one redis-server --sentinel monitoring the
// master at addr, from a config file of its own (a sentinel rewrites it).
func startSentinelProcess(t testing.TB, addr string, quorum int, password string) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redistest: redis-server is not on PATH (%v); install it with `apt-get install redis-server` (Debian/Ubuntu)", err)
	}
	host, port, _ := net.SplitHostPort(addr)
	dir := t.TempDir()
	for attempt := 1; ; attempt++ {
		p, err := freePort()
		if err != nil {
			t.Fatalf("redistest: %v", err)
		}
		conf := []string{
			"port " + strconv.Itoa(p),
			"bind 127.0.0.1",
			"dir " + dir,
			"loglevel warning",
			fmt.Sprintf("sentinel monitor %s %s %s %d", SentinelMaster, host, port, quorum),
			"sentinel down-after-milliseconds " + SentinelMaster + " 1000",
			"sentinel failover-timeout " + SentinelMaster + " 2000",
			"sentinel parallel-syncs " + SentinelMaster + " 2",
		}
		if password != "" {
			conf = append(conf, "sentinel auth-pass "+SentinelMaster+" "+password, "requirepass "+password)
		}
		file := filepath.Join(dir, "sentinel.conf")
		if err := os.WriteFile(file, []byte(strings.Join(conf, "\n")+"\n"), 0o600); err != nil {
			t.Fatalf("redistest: %v", err)
		}
		s := &Server{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(p)), bin: bin, dir: dir, argv: []string{file, "--sentinel"}, password: password}
		if err := s.launch(); err != nil {
			t.Fatalf("redistest: %v", err)
		}
		err = s.waitReady()
		if err == nil {
			t.Cleanup(s.Kill)
			return s
		}
		s.Kill()
		if out := s.log.String(); !strings.Contains(out, "already in use") || attempt == 5 {
			t.Fatalf("redistest: redis-server --sentinel on %s: %v; its output:\n%s", s.Addr, err, out)
		}
	}
}

// Addrs returns the sentinels' "host:port", comma-separated, for
// REDIS_SENTINEL_ADDRS.
func (sn *Sentinel) Addrs() string {
	addrs := make([]string, len(sn.Sentinels))
	for i, s := range sn.Sentinels {
		addrs[i] = s.Addr
	}
	return strings.Join(addrs, ",")
}

// Master returns the node a live sentinel names as master now. A master
// that was killed stays master until the sentinels have failed it over.
func (sn *Sentinel) Master(t testing.TB) *Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	m, err := sn.master(ctx)
	if err != nil {
		t.Fatalf("redistest: %v", err)
	}
	return m
}

func (sn *Sentinel) master(ctx context.Context) (*Server, error) {
	var errs []error
	for _, s := range sn.Sentinels {
		if !s.alive() {
			continue
		}
		addr, err := sn.sentinelClient(s).GetMasterAddrByName(ctx, SentinelMaster).Result()
		if err != nil {
			errs = append(errs, fmt.Errorf("sentinel %s: %w", s.Addr, err))
			continue
		}
		m, ok := sn.byAddr[net.JoinHostPort(addr[0], addr[1])]
		if !ok {
			return nil, fmt.Errorf("sentinel %s names %v as master, which is none of the nodes", s.Addr, addr)
		}
		return m, nil
	}
	return nil, fmt.Errorf("no live sentinel names the master: %w", errors.Join(errs...))
}

// WaitFailover waits until every live sentinel names a master other than
// old, that node says it is master, and every other live node replicates it
// with its link up; it returns the new master.
func (sn *Sentinel) WaitFailover(t testing.TB, old *Server) *Server {
	t.Helper()
	var m *Server
	sn.settle(t, func(ctx context.Context) error {
		var err error
		for _, s := range sn.Sentinels {
			if !s.alive() {
				continue
			}
			addr, err := sn.sentinelClient(s).GetMasterAddrByName(ctx, SentinelMaster).Result()
			if err != nil {
				return fmt.Errorf("sentinel %s: %w", s.Addr, err)
			}
			if got := net.JoinHostPort(addr[0], addr[1]); got == old.Addr {
				return fmt.Errorf("sentinel %s still names %s", s.Addr, got)
			}
		}
		if m, err = sn.master(ctx); err != nil {
			return err
		}
		live := 0
		for _, s := range sn.Nodes {
			if s != m && s.alive() {
				live++
			}
		}
		return sn.replicasUp(ctx, m, live)
	})
	return m
}

// replicasUp says why master is not a master with n replicas whose link to
// it is up.
func (sn *Sentinel) replicasUp(ctx context.Context, master *Server, n int) error {
	info, err := sn.client(master).Info(ctx, "replication").Result()
	if err != nil {
		return fmt.Errorf("%s: INFO replication: %w", master.Addr, err)
	}
	if role := infoField(info, "role"); role != "master" {
		return fmt.Errorf("%s is %s, not master", master.Addr, role)
	}
	online := strings.Count(info, "state=online")
	if online != n {
		return fmt.Errorf("%s has %d replicas online, want %d", master.Addr, online, n)
	}
	return nil
}

// settle calls check until it succeeds, failing the test with its last
// error after settleTimeout.
func (sn *Sentinel) settle(t testing.TB, check func(context.Context) error) {
	t.Helper()
	deadline := time.Now().Add(settleTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := check(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("redistest: Sentinel did not settle within %s: %v", settleTimeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// client is the client of a Redis node.
func (sn *Sentinel) client(s *Server) *redis.Client { return sn.clients[s] }

// sentinelClient is the client of a sentinel.
func (sn *Sentinel) sentinelClient(s *Server) *redis.SentinelClient { return sn.sentinels[s] }

// options are those of a client of a node or a sentinel: the password, and
// bounds short enough for a check to fail fast on a dead one.
func (sn *Sentinel) options(s *Server) *redis.Options {
	return &redis.Options{Addr: s.Addr, Password: sn.password, DialTimeout: time.Second, ReadTimeout: time.Second, MaxRetries: -1}
}
