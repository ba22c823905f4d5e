package bench

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/orderexpiry/orderexpiry/internal/gen/orderexpiry/v1"
	"github.com/orderexpiry/orderexpiry/internal/redistest"
)

const (
	// clusterMasters is the cluster's size: 3 masters, each with 1 replica.
	clusterMasters = 3
	// clusterDue is how many orders the expiry workload has (quick: a tenth).
	clusterDue = 20_000
	// clusterSpread is the span their deadlines are spread evenly over.
	clusterSpread = 2 * time.Second
	// clusterLead is how long after the last checkout the first deadline
	// comes, so that the checkouts do not overlap the expirations.
	clusterLead = 2 * time.Second
	// clusterSettle bounds `redis-cli --cluster create` and, apart, the wait
	// until every node agrees the cluster is whole.
	clusterSettle = 30 * time.Second
)

// clusterSide is what stage 6 measured on one setup.
type clusterSide struct {
	checkout    loadResult
	checkoutCPU string
	pending     int // orders the Checkout load left pending (ttl 1h)
	late        lateResult
	lateCPU     string
	took        time.Duration // checking out the due orders
	gap         time.Duration // from the last checkout to the first deadline
}

// cluster runs stage 6: the service on one redis-server and on a Redis
// Cluster of 3 masters and 3 replicas, one after the other, so that the two
// never share the CPUs. Each gets the throughput stage's gRPC Checkout load
// and then an expiry workload watched through WatchExpirations. There is no
// goal: the cluster's figures are set beside one Redis's to show what the
// cluster costs on one machine (its writes wait for a replica, its event
// reads go to replicas, and six redis-servers share the cores).
func (r *runner) cluster(ctx context.Context) error {
	if _, err := exec.LookPath("redis-cli"); err != nil {
		return fmt.Errorf("redis-cli is needed to create the cluster (apt-get install redis-tools): %w", err)
	}
	due := clusterDue
	if r.cfg.Quick {
		due = clusterDue / 10
	}

	r.logf("6: the service on one redis-server")
	one, err := r.clusterOne(ctx, due)
	if err != nil {
		return fmt.Errorf("on one Redis: %w", err)
	}
	r.logf("6: the service on a Redis Cluster of %d masters + %d replicas", clusterMasters, clusterMasters)
	cl, err := r.clusterMany(ctx, due)
	if err != nil {
		return fmt.Errorf("on a Redis Cluster: %w", err)
	}

	const name, base = "cluster 3+3: ", " 1 Redis"
	add := func(measure, value, baseline, rat string) {
		r.t.add(row{"6", name + measure, value, baseline + base, rat, "report", ""})
	}
	add("Checkout gRPC rate", rate(cl.checkout.rate), rate(one.checkout.rate), ratio(cl.checkout.rate, one.checkout.rate))
	add("Checkout gRPC p50", ms(cl.checkout.lat.P50), ms(one.checkout.lat.P50), ratio(float64(cl.checkout.lat.P50), float64(one.checkout.lat.P50)))
	add("Checkout gRPC p99", ms(cl.checkout.lat.P99), ms(one.checkout.lat.P99), ratio(float64(cl.checkout.lat.P99), float64(one.checkout.lat.P99)))
	add(fmt.Sprintf("expirations delivered (%d due over %s)", due, clusterSpread), count(cl.late.got, cl.late.want),
		count(one.late.got, one.late.want), ratio(float64(cl.late.got), float64(one.late.got)))
	claim := func(what string, c, o time.Duration) {
		add("expired_at - deadline "+what, cl.late.fmt(c), one.late.fmt(o), latRatio(c, cl.late.waited, o, one.late.waited))
	}
	claim("p50", cl.late.claim.P50, one.late.claim.P50)
	claim("p99", cl.late.claim.P99, one.late.claim.P99)
	claim("max", cl.late.claim.Max, one.late.claim.Max)

	for _, s := range []struct {
		label string
		side  clusterSide
	}{{"1 Redis", one}, {"cluster 3+3", cl}} {
		l := s.side.late
		r.t.note("6: %s, gRPC Checkout: %s", s.label, s.side.checkoutCPU)
		if s.side.checkout.errs > 0 {
			r.t.note("6: %s, gRPC Checkout had %d failed calls, the first: %v", s.label, s.side.checkout.errs, s.side.checkout.firstErr)
		}
		r.t.note("6: %s, expiry: %d orders checked out in %s, the last %s before the first deadline, beside about %d pending orders left by the Checkout load; "+
			"receive lateness (receive - deadline) p50 %s, p99 %s, max %s; %d duplicate events, %d watch reconnects (last error: %v)",
			s.label, due, s.side.took.Round(time.Millisecond), s.side.gap.Round(time.Millisecond), s.side.pending,
			l.fmt(l.late.P50), l.fmt(l.late.P99), l.fmt(l.late.Max), l.dups, l.reconnects, l.lastErr)
		r.t.note("6: %s, expiry, from the first deadline until the last event: %s", s.label, s.side.lateCPU)
	}
	return nil
}

// clusterOne measures the service on one fresh redis-server, as the other
// stages run it.
func (r *runner) clusterOne(ctx context.Context, due int) (clusterSide, error) {
	e, err := r.startEnv()
	if err != nil {
		return clusterSide{}, err
	}
	defer e.stop()
	return r.clusterMeasure(ctx, "one", e, cpuSet{svc: e.svc.PID(), masters: []int{e.redis.PID()}}, due)
}

// clusterMany measures the service on a fresh Redis Cluster.
func (r *runner) clusterMany(ctx context.Context, due int) (clusterSide, error) {
	began := time.Now()
	c, err := startBenchCluster(ctx, r.dir)
	if err != nil {
		return clusterSide{}, err
	}
	defer c.stop() // after e.stop below: the service stops before its Redis
	r.logf("  cluster of %d nodes up and settled in %s", len(c.nodes), time.Since(began).Round(time.Millisecond))
	e, err := r.startClusterEnv(c)
	if err != nil {
		return clusterSide{}, err
	}
	defer e.stop()
	set := cpuSet{svc: e.svc.PID()}
	for _, m := range c.masters {
		set.masters = append(set.masters, m.PID())
	}
	for _, s := range c.replicas {
		set.replicas = append(set.replicas, s.PID())
	}
	return r.clusterMeasure(ctx, "cluster", e, set, due)
}

// clusterMeasure runs the two workloads of stage 6 on a running service.
func (r *runner) clusterMeasure(ctx context.Context, name string, e *env, procs cpuSet, due int) (clusterSide, error) {
	var side clusterSide

	// 1) The throughput stage's gRPC Checkout load, with its callers and
	// duration.
	var seq atomic.Int64
	ttl := durationpb.New(time.Hour)
	checkout := func(ctx context.Context, w int) error {
		resp, err := e.clients[w%len(e.clients)].Checkout(ctx, &pb.CheckoutRequest{OrderId: "c6-" + strconv.FormatInt(seq.Add(1)-1, 10), Ttl: ttl})
		if err == nil && !resp.GetCreated() {
			err = fmt.Errorf("checkout %s: not created", resp.GetOrder().GetOrderId())
		}
		return err
	}
	r.logf("  gRPC Checkout: %d callers for %s (after %s of warm-up)", r.sz.callers, r.sz.loadFor, r.sz.warmup)
	// The warm-up is a run of its own, discarded, so that the CPU counted
	// across the measured run covers the measured calls only (hammer's own
	// CPU note counts one redis-server, and a cluster has six).
	hammer(ctx, e, r.sz.callers, 0, r.sz.warmup, checkout)
	prof := r.profile(e.svc, "cluster-"+name+"-checkout", time.Now())
	cpu := procs.snap()
	side.checkout = hammer(ctx, e, r.sz.callers, 0, r.sz.loadFor, checkout)
	side.checkoutCPU = procs.since(cpu)
	prof.wait()
	side.pending = int(seq.Load())
	res := side.checkout
	r.logf("    %.0f/s, p50 %s, p99 %s, %d errors; %s", res.rate, ms(res.lat.P50), ms(res.lat.P99), res.errs, side.checkoutCPU)
	if res.calls == 0 {
		return side, fmt.Errorf("no Checkout succeeded: %v", res.firstErr)
	}

	// 2) Expiry lateness: `due` orders with deadlines spread evenly over
	// clusterSpread, the first clusterLead after the checkouts should end
	// (planned from the rate just measured, with a margin for the watcher).
	if err := ctx.Err(); err != nil {
		return side, err
	}
	const prefix = "due6-"
	w, err := startWatchers(ctx, e.svc.GRPCAddr, 1, prefix, due)
	if err != nil {
		return side, err
	}
	defer w.stop()
	lead := clusterLead + time.Duration(1.25*float64(due)/res.rate*float64(time.Second))
	start := time.Now().Add(lead)
	last := start.Add(clusterSpread)
	r.logf("  expiry: checking out %d orders due from %s to %s", due, lead.Round(time.Millisecond), (lead + clusterSpread).Round(time.Millisecond))
	side.took, err = checkoutAll(ctx, e.clients, r.sz.callers, due, func(i int) string { return prefix + strconv.Itoa(i) }, until(start, clusterSpread, due))
	if err != nil {
		return side, err
	}
	side.gap = time.Until(start)
	r.logf("    checked out in %s, %s before the first deadline; waiting for the events", side.took.Round(time.Millisecond), side.gap.Round(time.Millisecond))
	time.Sleep(time.Until(start))
	cpu = procs.snap()
	w.wait(last.Add(r.sz.svcWait))
	waited := time.Since(last)
	side.lateCPU = procs.since(cpu)
	w.stop() // the watcher's results may be read only once it has stopped
	side.late = watchResult(w.ws)
	side.late.waited = waited
	l := side.late
	r.logf("    delivered %d/%d, expired_at - deadline p50 %s, p99 %s, max %s; %s", l.got, l.want,
		l.fmt(l.claim.P50), l.fmt(l.claim.P99), l.fmt(l.claim.Max), side.lateCPU)
	return side, nil
}

// startClusterEnv starts the service on the cluster c and dials it; it is
// startEnv for a cluster.
func (r *runner) startClusterEnv(c *benchCluster) (*env, error) {
	addrs := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		addrs[i] = n.Addr
	}
	// By flag: startService names no store but REDIS_URL (empty here, so
	// unset), and the flag is REDIS_CLUSTER_ADDRS's.
	svc, err := startService(r.serverBin, "", "-redis-cluster-addrs", strings.Join(addrs, ","))
	if err != nil {
		return nil, err
	}
	conns, clients, err := dial(svc.GRPCAddr, r.cfg.GRPCConns)
	if err != nil {
		svc.Stop()
		return nil, err
	}
	// env wants one redis-server, for hammer's CPU note (unused here) and to
	// stop it; the cluster's stop kills every node (Kill may be repeated).
	return &env{redis: c.nodes[0], svc: svc, conns: conns, clients: clients, warn: func() {
		if w := svc.Warnings(); len(w) > 0 {
			r.logf("  the service on the cluster logged %d warnings; the first:\n%s", len(w), indent(strings.Join(w[:min(len(w), 5)], "\n"), "    "))
			r.t.note("6: the service on the cluster logged %d warnings, the first: %s", len(w), w[0])
		}
	}}, nil
}

// benchCluster is a Redis Cluster of redis-servers of the benchmark's own.
// (redistest.StartCluster does the same for tests, but needs a testing.TB.)
type benchCluster struct {
	nodes             []*Redis
	masters, replicas []*Redis // by role, once settled
}

// startBenchCluster starts 2*clusterMasters cluster-mode redis-servers,
// joins them with `redis-cli --cluster create ... --cluster-replicas 1` and
// waits until every node says the cluster is whole and every replica's link
// to its master is up. On error it stops what it started.
func startBenchCluster(ctx context.Context, dir string) (_ *benchCluster, err error) {
	c := &benchCluster{}
	defer func() {
		if err != nil {
			c.stop()
		}
	}()
	for range 2 * clusterMasters {
		n, err := startClusterNode(dir)
		if err != nil {
			return nil, err
		}
		c.nodes = append(c.nodes, n)
	}

	args := []string{"--cluster", "create"}
	for _, n := range c.nodes {
		args = append(args, n.Addr)
	}
	args = append(args, "--cluster-replicas", "1", "--cluster-yes")
	cctx, cancel := context.WithTimeout(ctx, clusterSettle)
	defer cancel()
	out, err := exec.CommandContext(cctx, "redis-cli", args...).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("redis-cli %s: %w; its output:\n%s", strings.Join(args, " "), err, out)
	}
	// The line is coloured even when redis-cli does not write to a
	// terminal, but the colour codes wrap it whole.
	if !strings.Contains(string(out), "All 16384 slots covered") {
		return nil, fmt.Errorf("redis-cli %s did not say all slots are covered; its output:\n%s", strings.Join(args, " "), out)
	}
	if err := c.settle(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// startClusterNode starts one cluster-mode redis-server in a directory of
// its own (nodes.conf is per node). The cluster bus gets a free port of its
// own: the default, port+10000, is past 65535 for most ephemeral ports.
func startClusterNode(parent string) (*Redis, error) {
	dir, err := os.MkdirTemp(parent, "cluster-node-")
	if err != nil {
		return nil, err
	}
	for attempt := 1; ; attempt++ {
		bus, err := freeLoopbackPort()
		if err != nil {
			return nil, err
		}
		s, err := redistest.Launch(dir, nil,
			"--cluster-enabled", "yes",
			"--cluster-config-file", filepath.Join(dir, "nodes.conf"),
			"--cluster-node-timeout", "1000",
			"--cluster-port", strconv.Itoa(bus),
			// Replicas take their first sync at once rather than after 5 s.
			"--repl-diskless-sync-delay", "0",
			"--appendonly", "no",
			"--save", "")
		if err == nil {
			return &Redis{s}, nil
		}
		// Launch tries other client ports itself; a bus port taken since
		// we probed it needs another one from here.
		if !strings.Contains(err.Error(), "already in use") || attempt == 3 {
			return nil, err
		}
	}
}

// freeLoopbackPort returns a loopback port that was free a moment ago.
func freeLoopbackPort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// settle polls every node until the cluster is whole, and records which
// nodes are masters and which replicas.
func (c *benchCluster) settle(ctx context.Context) error {
	clients := make([]*redis.Client, len(c.nodes))
	for i, n := range c.nodes {
		clients[i] = redis.NewClient(&redis.Options{Addr: n.Addr, DialTimeout: time.Second, ReadTimeout: 2 * time.Second, MaxRetries: -1})
		defer clients[i].Close()
	}
	deadline := time.Now().Add(clusterSettle)
	for {
		err := c.check(ctx, clients)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the cluster did not settle within %s: %w", clusterSettle, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// check says why the cluster is not yet whole: every node must report
// cluster_state:ok, all 16384 slots ok and all nodes known; every master
// must have its replica (the service waits for a replica only where there
// is one) and every replica its link to its master up.
func (c *benchCluster) check(ctx context.Context, clients []*redis.Client) error {
	c.masters, c.replicas = nil, nil
	for i, rdb := range clients {
		addr := c.nodes[i].Addr
		info, err := rdb.ClusterInfo(ctx).Result()
		if err != nil {
			return fmt.Errorf("%s: CLUSTER INFO: %w", addr, err)
		}
		if v := infoValue(info, "cluster_state"); v != "ok" {
			return fmt.Errorf("%s: cluster_state:%s", addr, v)
		}
		if v := infoValue(info, "cluster_slots_ok"); v != "16384" {
			return fmt.Errorf("%s: cluster_slots_ok:%s", addr, v)
		}
		if v, _ := strconv.Atoi(infoValue(info, "cluster_known_nodes")); v < len(c.nodes) {
			return fmt.Errorf("%s: cluster_known_nodes:%d, want %d", addr, v, len(c.nodes))
		}
		repl, err := rdb.Info(ctx, "replication").Result()
		if err != nil {
			return fmt.Errorf("%s: INFO replication: %w", addr, err)
		}
		switch role := infoValue(repl, "role"); role {
		case "master":
			if v, _ := strconv.Atoi(infoValue(repl, "connected_slaves")); v < 1 {
				return fmt.Errorf("%s: a master with connected_slaves:%d", addr, v)
			}
			c.masters = append(c.masters, c.nodes[i])
		case "slave":
			if v := infoValue(repl, "master_link_status"); v != "up" {
				return fmt.Errorf("%s: a replica with master_link_status:%s", addr, v)
			}
			c.replicas = append(c.replicas, c.nodes[i])
		default:
			return fmt.Errorf("%s: role:%s", addr, role)
		}
	}
	if len(c.masters) != clusterMasters {
		return fmt.Errorf("%d masters, want %d", len(c.masters), clusterMasters)
	}
	return nil
}

// stop kills every node.
func (c *benchCluster) stop() {
	for _, n := range c.nodes {
		n.Stop()
	}
}

// infoValue is the value of key in the "key:value" lines of INFO or
// CLUSTER INFO, or "".
func infoValue(info, key string) string {
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimRight(line, "\r"), key+":"); ok {
			return v
		}
	}
	return ""
}

// cpuSet names the processes whose CPU time stage 6 splits: the service and
// the redis-servers by role (env.cpu counts one redis-server only).
type cpuSet struct {
	svc               int
	masters, replicas []int
}

// cpuSetSnap is the CPU time used so far by a cpuSet's processes, this load
// generator and the whole machine.
type cpuSetSnap struct {
	at                                 time.Time
	svc, masters, replicas, gen, total time.Duration
}

func (p cpuSet) snap() cpuSetSnap {
	sum := func(pids []int) (d time.Duration) {
		for _, pid := range pids {
			d += cpuTime(pid)
		}
		return d
	}
	return cpuSetSnap{at: time.Now(), svc: cpuTime(p.svc), masters: sum(p.masters), replicas: sum(p.replicas), gen: selfCPU(), total: machineBusy()}
}

// since says, as env.cpuSince does, how much CPU each process used since s,
// with Redis's part split between masters and replicas when there are
// replicas.
func (p cpuSet) since(s cpuSetSnap) string {
	n := p.snap()
	svc, m, rep, gen := n.svc-s.svc, n.masters-s.masters, n.replicas-s.replicas, n.gen-s.gen
	other := max(n.total-s.total-svc-m-rep-gen, 0)
	rd := fmt.Sprintf("redis %.2fs", (m + rep).Seconds())
	if len(p.replicas) > 0 {
		rd += fmt.Sprintf(" (%d masters %.2fs, %d replicas %.2fs)", len(p.masters), m.Seconds(), len(p.replicas), rep.Seconds())
	}
	return fmt.Sprintf("CPU over %s: service %.2fs, %s, load generator %.2fs, other processes %.2fs",
		n.at.Sub(s.at).Round(10*time.Millisecond), svc.Seconds(), rd, gen.Seconds(), other.Seconds())
}
