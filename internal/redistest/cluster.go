package redistest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/orderexpiry/orderexpiry/internal/redisstore"
)

const (
	// clusterSlots is the number of hash slots of every Redis Cluster.
	clusterSlots = 16384
	// createTimeout bounds `redis-cli --cluster create`.
	createTimeout = 30 * time.Second
	// settleTimeout bounds how long StartCluster waits for a new cluster to
	// agree on its slots, and WaitFailover for a failover to end.
	settleTimeout = 30 * time.Second
)

// Cluster is a Redis Cluster of redis-server processes on loopback.
type Cluster struct {
	// Nodes are masters first in creation order, then replicas (as passed to
	// redis-cli --cluster create, which picks at random which replica
	// follows which master when all are on one host). Roles change with
	// failovers: Masters and MasterOf tell who is master now.
	Nodes []*Server

	byAddr  map[string]*Server
	clients map[*Server]*redis.Client // one per node, for the checks here

	mu   sync.Mutex
	open []*redis.ClusterClient // made by Client and not yet closed

	killOnce sync.Once
}

// StartCluster starts masters*(1+replicas) cluster-mode redis-servers, joins
// them with `redis-cli --cluster create ... --cluster-replicas N
// --cluster-yes`, waits until every node reports cluster_state:ok and agrees
// on all 16384 slots (and every replica's link to its master is up), and
// stops them all at t.Cleanup. Extra args are passed to every redis-server
// after the cluster's own, so they may override them.
//
// Every node runs without persistence, with --cluster-node-timeout 1000
// (a master killed with Server.Kill is replaced within a few seconds),
// --cluster-require-full-coverage no, and --repl-diskless-sync-delay 0 so
// that replicas do not wait 5 s for their first sync.
//
// With "--requirepass", pw, pass "--masterauth", pw too, for the replicas;
// redis-cli and Client then use the password.
//
// Like Start, it fails the test when redis-server or redis-cli is missing.
func StartCluster(t testing.TB, masters, replicas int, args ...string) *Cluster {
	t.Helper()
	c, err := LaunchCluster(context.Background(), t.TempDir(), masters, replicas, args...)
	if err != nil {
		t.Fatalf("redistest: these tests run against a real Redis Cluster: %v", err)
	}
	t.Cleanup(c.Kill)
	return c
}

// LaunchCluster starts a cluster as StartCluster does, keeping each node's
// files in a directory of its own under dir, for a program that is not a
// test: the caller stops it with Kill. On error it stops what it started.
func LaunchCluster(ctx context.Context, dir string, masters, replicas int, args ...string) (_ *Cluster, err error) {
	if masters < 3 || replicas < 0 {
		return nil, fmt.Errorf("a Redis Cluster needs at least 3 masters and no negative replicas, not %d and %d", masters, replicas)
	}
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		return nil, fmt.Errorf("redis-cli, which creates the cluster, is not on PATH (%v); install it with `apt-get install redis-tools` (Debian/Ubuntu)", err)
	}

	c := &Cluster{byAddr: map[string]*Server{}, clients: map[*Server]*redis.Client{}}
	defer func() {
		if err != nil {
			c.Kill()
		}
	}()
	for range masters * (1 + replicas) {
		s, err := launchClusterNode(dir, args)
		if err != nil {
			return nil, err
		}
		c.Nodes = append(c.Nodes, s)
		c.byAddr[s.Addr] = s
		rdb, err := redisstore.NewClient(s.URL(), s.TLSFiles())
		if err != nil {
			return nil, err
		}
		c.clients[s] = rdb
	}

	cctx, cancel := context.WithTimeout(ctx, createTimeout)
	defer cancel()
	cmdArgs := append([]string{"--cluster", "create"}, c.Addrs()...)
	cmdArgs = append(cmdArgs, "--cluster-replicas", strconv.Itoa(replicas), "--cluster-yes")
	cmd := exec.CommandContext(cctx, cli, cmdArgs...)
	if pw := c.Nodes[0].password; pw != "" {
		// Through the environment: -a makes redis-cli print a warning.
		cmd.Env = append(os.Environ(), "REDISCLI_AUTH="+pw)
	}
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if cctx.Err() != nil {
		err = fmt.Errorf("%w after %s", cctx.Err(), createTimeout)
	}
	// redis-cli colours its output even when it is not a terminal.
	text := ansiColour.ReplaceAllString(string(out), "")
	if err != nil {
		return nil, fmt.Errorf("redis-cli %s: %v; its output:\n%s", strings.Join(cmdArgs, " "), err, text)
	}
	if !strings.Contains(text, "[OK] All 16384 slots covered") {
		return nil, fmt.Errorf("redis-cli %s did not say all slots are covered; its output:\n%s", strings.Join(cmdArgs, " "), text)
	}

	err = c.settle(ctx, start, func(ctx context.Context) error {
		if err := c.healthy(ctx, len(c.Nodes)); err != nil {
			return err
		}
		v, err := c.anyView(ctx)
		if err != nil {
			return err
		}
		got := v.masters()
		if len(got) != masters {
			return fmt.Errorf("%d masters serve slots, want %d", len(got), masters)
		}
		// Every master has its replicas, so that a write that waits for
		// one (WAIT) finds it from the first write on.
		for _, m := range got {
			repl, err := c.clients[m].Info(ctx, "replication").Result()
			if err != nil {
				return fmt.Errorf("%s: INFO replication: %w", m.Addr, err)
			}
			if n, _ := strconv.Atoi(infoField(repl, "connected_slaves")); n < replicas {
				return fmt.Errorf("%s: a master with connected_slaves:%d, want %d", m.Addr, n, replicas)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

var ansiColour = regexp.MustCompile("\x1b\\[[0-9;]*m")

// launchClusterNode starts one cluster-mode redis-server in a directory of
// its own under parent (nodes.conf is per node). Its cluster bus gets a
// port of its own (--cluster-port): the default, port+10000, is past 65535
// for most ephemeral ports.
func launchClusterNode(parent string, args []string) (*Server, error) {
	dir, err := os.MkdirTemp(parent, "cluster-node-")
	if err != nil {
		return nil, err
	}
	for attempt := 1; ; attempt++ {
		busPort, err := freePort()
		if err != nil {
			return nil, err
		}
		argv := []string{
			"--cluster-enabled", "yes",
			"--cluster-config-file", filepath.Join(dir, "nodes.conf"),
			"--cluster-port", strconv.Itoa(busPort),
			"--cluster-node-timeout", "1000",
			"--cluster-require-full-coverage", "no",
			"--appendonly", "no",
			"--save", "",
			"--repl-diskless-sync-delay", "0",
		}
		s, err := Launch(dir, nil, append(argv, args...)...)
		// Launch tries other client ports itself; a taken bus port needs
		// another one from here.
		if err == nil || !errors.Is(err, errAddrInUse) || attempt == 5 {
			return s, err
		}
	}
}

// Kill kills every node at once with SIGKILL and closes the clients the
// cluster keeps for its own checks. It may be called more than once.
func (c *Cluster) Kill() {
	c.killOnce.Do(func() {
		for _, s := range c.Nodes {
			s.Kill()
		}
		for _, rdb := range c.clients {
			_ = rdb.Close()
		}
	})
}

// Addrs returns the "host:port" of every node, for seeds.
func (c *Cluster) Addrs() []string {
	addrs := make([]string, len(c.Nodes))
	for i, s := range c.Nodes {
		addrs[i] = s.Addr
	}
	return addrs
}

// Masters returns the nodes that currently serve slots as masters, in slot
// order, as a live node sees them (with CLUSTER SHARDS). A master that was
// killed is among them until the cluster has failed it over.
func (c *Cluster) Masters(t testing.TB) []*Server {
	t.Helper()
	ms, err := c.MastersContext(context.Background())
	if err != nil {
		t.Fatalf("redistest: %v", err)
	}
	return ms
}

// MastersContext is Masters for a program that is not a test.
func (c *Cluster) MastersContext(ctx context.Context) ([]*Server, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	v, err := c.anyView(ctx)
	if err != nil {
		return nil, err
	}
	return v.masters(), nil
}

// currentView is the slot map as a live node sees it now.
func (c *Cluster) currentView(t testing.TB) view {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	v, err := c.anyView(ctx)
	if err != nil {
		t.Fatalf("redistest: %v", err)
	}
	return v
}

// MasterOf returns the node currently master for the slot of key, as a live
// node sees it.
func (c *Cluster) MasterOf(t testing.TB, key string) *Server {
	t.Helper()
	m, err := c.masterOf(c.currentView(t), key)
	if err != nil {
		t.Fatalf("redistest: %v", err)
	}
	return m
}

// MastersOf is MasterOf for a program that is not a test, for many keys
// at once: the master of each, from one view of the slot map.
func (c *Cluster) MastersOf(ctx context.Context, keys []string) ([]*Server, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	v, err := c.anyView(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]*Server, len(keys))
	for i, k := range keys {
		if out[i], err = c.masterOf(v, k); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// masterOf returns the master that v says serves the slot of key.
func (c *Cluster) masterOf(v view, key string) (*Server, error) {
	slot := int64(keySlot(key))
	for _, r := range v {
		if r.start <= slot && slot <= r.end {
			return r.master, nil
		}
	}
	return nil, fmt.Errorf("no master serves slot %d of %q", slot, key)
}

// WaitFailover waits until every slot is served again by a live master,
// cluster_state is ok on every live node, the live nodes agree on which
// master serves each slot, and every live replica's link to its master is
// up; then until every open client made by Client routes every slot to its
// new master (see Client). It fails the test, with every live node's
// CLUSTER NODES, when that takes more than 30 s.
func (c *Cluster) WaitFailover(t testing.TB) {
	t.Helper()
	if err := c.WaitSlots(context.Background()); err != nil {
		t.Fatalf("redistest: %v", err)
	}

	c.mu.Lock()
	open := slices.Clone(c.open)
	c.mu.Unlock()
	for _, rdb := range open {
		rdb.ReloadState(context.Background())
		reloaded := time.Now()
		err := c.settle(context.Background(), time.Now(), func(ctx context.Context) error {
			err := c.routes(ctx, rdb)
			if err != nil && time.Since(reloaded) > 250*time.Millisecond {
				// A reload that asked a node before it had heard of
				// the failover; ask again.
				rdb.ReloadState(context.Background())
				reloaded = time.Now()
			}
			return err
		})
		if err != nil {
			t.Fatalf("redistest: %v", err)
		}
	}
}

// WaitSlots is the first half of WaitFailover, for a program that is not a
// test: it waits until every slot is served again by a live master and the
// live nodes agree, and fails when that takes more than 30 s.
func (c *Cluster) WaitSlots(ctx context.Context) error {
	live := 0
	for _, s := range c.Nodes {
		if s.alive() {
			live++
		}
	}
	return c.settle(ctx, time.Now(), func(ctx context.Context) error { return c.healthy(ctx, live) })
}

// reshardTimeout bounds `redis-cli --cluster reshard`.
const reshardTimeout = 60 * time.Second

// Reshard moves n slots from master from to master to while the cluster
// serves, as an operator does: `redis-cli --cluster reshard ...
// --cluster-from <id> --cluster-to <id> --cluster-slots n --cluster-yes`,
// which moves one slot after the other, its keys with MIGRATE. It returns
// once redis-cli is done and every node agrees on the new slot map, with
// how long redis-cli took; it fails the test, with redis-cli's output, if
// redis-cli fails or takes more than a minute.
func (c *Cluster) Reshard(t testing.TB, from, to *Server, n int) time.Duration {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), reshardTimeout)
	defer cancel()
	var ids [2]string
	for i, s := range []*Server{from, to} {
		id, err := c.clients[s].ClusterMyID(ctx).Result()
		if err != nil {
			t.Fatalf("redistest: %s: CLUSTER MYID: %v", s.Addr, err)
		}
		ids[i] = id
	}
	args := []string{"--cluster", "reshard", from.Addr,
		"--cluster-from", ids[0], "--cluster-to", ids[1],
		"--cluster-slots", strconv.Itoa(n), "--cluster-yes"}
	cmd := exec.CommandContext(ctx, "redis-cli", args...)
	if pw := c.Nodes[0].password; pw != "" {
		cmd.Env = append(os.Environ(), "REDISCLI_AUTH="+pw)
	}
	start := time.Now()
	out, err := cmd.CombinedOutput()
	took := time.Since(start)
	if err != nil {
		t.Fatalf("redistest: redis-cli %s: %v after %s; its output:\n%s", strings.Join(args, " "), err, took,
			ansiColour.ReplaceAllString(string(out), ""))
	}
	if err := c.settle(context.Background(), start, func(ctx context.Context) error { return c.healthy(ctx, len(c.Nodes)) }); err != nil {
		t.Fatalf("redistest: after the resharding: %v", err)
	}
	return took
}

// Client returns a client of the cluster, seeded with every node, with
// timeouts as short as redisstore.NewClient's; it is closed when the test
// ends.
//
// go-redis reloads a ClusterClient's map of slots on a MOVED or ASK reply
// and otherwise only every ClusterStateReloadInterval (60 s by default):
// after a master is killed, such a client keeps sending its slots to the
// dead address. WaitFailover therefore reloads the clients made here and
// waits until they route to the new masters; a client made otherwise needs
// ReloadState.
func (c *Cluster) Client(t testing.TB) *redis.ClusterClient {
	t.Helper()
	rdb := redis.NewClusterClient(&redis.ClusterOptions{
		Addrs:         c.Addrs(),
		Password:      c.Nodes[0].password,
		DialTimeout:   500 * time.Millisecond,
		DialerRetries: 1, // a dead master is refused at once; do not dial it 5 times
		ReadTimeout:   800 * time.Millisecond,
		WriteTimeout:  800 * time.Millisecond,
		PoolTimeout:   800 * time.Millisecond,
	})
	c.mu.Lock()
	c.open = append(c.open, rdb)
	c.mu.Unlock()
	t.Cleanup(func() {
		c.mu.Lock()
		c.open = slices.DeleteFunc(c.open, func(o *redis.ClusterClient) bool { return o == rdb })
		c.mu.Unlock()
		_ = rdb.Close()
	})
	return rdb
}

// routes says which slot rdb does not send to the master that the cluster
// has for it now.
func (c *Cluster) routes(ctx context.Context, rdb *redis.ClusterClient) error {
	v, err := c.anyView(ctx)
	if err != nil {
		return err
	}
	for _, r := range v {
		key := keyIn(r.start, r.end)
		m, err := rdb.MasterForKey(ctx, key)
		if err != nil {
			return fmt.Errorf("cluster client: master for slot %d: %w", keySlot(key), err)
		}
		if addr := m.Options().Addr; addr != r.master.Addr {
			return fmt.Errorf("cluster client sends slot %d to %s, not to its master %s", keySlot(key), addr, r.master.Addr)
		}
	}
	return nil
}

// settle calls check until it succeeds; after settleTimeout, or once ctx
// is done, it returns the last error with every live node's CLUSTER NODES.
func (c *Cluster) settle(ctx context.Context, since time.Time, check func(context.Context) error) error {
	deadline := time.Now().Add(settleTimeout)
	for {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := check(cctx)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("the cluster had not settled (%w): %w\n%s", context.Cause(ctx), err, c.dump())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the cluster did not settle within %s of %s: %w\n%s",
				settleTimeout, since.Format("15:04:05.000"), err, c.dump())
		}
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// healthy says why the live nodes are not a settled cluster of want nodes:
// each reports cluster_state:ok and cluster_slots_ok:16384, knows at least
// want nodes, sees every slot served by a live master, as every other live
// node does, and, as a replica, has its link to its master up.
func (c *Cluster) healthy(ctx context.Context, want int) error {
	var first view
	var firstNode *Server
	for _, s := range c.Nodes {
		if !s.alive() {
			continue
		}
		rdb := c.clients[s]
		info, err := rdb.ClusterInfo(ctx).Result()
		if err != nil {
			return fmt.Errorf("%s: CLUSTER INFO: %w", s.Addr, err)
		}
		if st := infoField(info, "cluster_state"); st != "ok" {
			return fmt.Errorf("%s: cluster_state:%s", s.Addr, st)
		}
		if ok := infoField(info, "cluster_slots_ok"); ok != strconv.Itoa(clusterSlots) {
			return fmt.Errorf("%s: cluster_slots_ok:%s", s.Addr, ok)
		}
		if n, _ := strconv.Atoi(infoField(info, "cluster_known_nodes")); n < want {
			return fmt.Errorf("%s: cluster_known_nodes:%d, want %d", s.Addr, n, want)
		}
		v, err := c.view(ctx, s)
		if err != nil {
			return err
		}
		if err := v.complete(); err != nil {
			return fmt.Errorf("%s: %w", s.Addr, err)
		}
		for _, r := range v {
			if !r.master.alive() {
				return fmt.Errorf("%s: slots %d-%d are still served by %s, which is down", s.Addr, r.start, r.end, r.master.Addr)
			}
		}
		if first == nil {
			first, firstNode = v, s
		} else if !slices.Equal(v, first) {
			return fmt.Errorf("%s sees slots served by %s, %s by %s", s.Addr, v, firstNode.Addr, first)
		}
		repl, err := rdb.Info(ctx, "replication").Result()
		if err != nil {
			return fmt.Errorf("%s: INFO replication: %w", s.Addr, err)
		}
		if infoField(repl, "role") == "slave" {
			if st := infoField(repl, "master_link_status"); st != "up" {
				return fmt.Errorf("%s: replica of %s:%s with master_link_status:%s", s.Addr,
					infoField(repl, "master_host"), infoField(repl, "master_port"), st)
			}
		}
	}
	if first == nil {
		return errors.New("no node is up")
	}
	return nil
}

// masters are the masters in v, in slot order.
func (v view) masters() []*Server {
	var ms []*Server
	for _, r := range v {
		if !slices.Contains(ms, r.master) {
			ms = append(ms, r.master)
		}
	}
	return ms
}

// slotRange is a range of slots and the master that serves it.
type slotRange struct {
	start, end int64
	master     *Server
}

// view is the slot ranges a node knows a master for, in slot order.
type view []slotRange

func (v view) String() string {
	var b strings.Builder
	for i, r := range v {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%d-%d %s", r.start, r.end, r.master.Addr)
	}
	return b.String()
}

// complete says which slot has no master in v.
func (v view) complete() error {
	next := int64(0)
	for _, r := range v {
		if r.start != next {
			return fmt.Errorf("no master serves slot %d", next)
		}
		next = r.end + 1
	}
	if next != clusterSlots {
		return fmt.Errorf("no master serves slot %d", next)
	}
	return nil
}

// view asks s with CLUSTER SHARDS which master serves which slots.
func (c *Cluster) view(ctx context.Context, s *Server) (view, error) {
	shards, err := c.clients[s].ClusterShards(ctx).Result()
	if err != nil {
		return nil, fmt.Errorf("%s: CLUSTER SHARDS: %w", s.Addr, err)
	}
	var v view
	for _, sh := range shards {
		if len(sh.Slots) == 0 {
			continue
		}
		var master *Server
		for _, n := range sh.Nodes {
			if n.Role != "master" {
				continue
			}
			addr := net.JoinHostPort(n.IP, strconv.FormatInt(n.Port, 10))
			if master = c.byAddr[addr]; master == nil {
				return nil, fmt.Errorf("%s: CLUSTER SHARDS names master %s, which is not a node of this cluster", s.Addr, addr)
			}
		}
		if master == nil {
			return nil, fmt.Errorf("%s: CLUSTER SHARDS has slots %v with no master", s.Addr, sh.Slots)
		}
		for _, r := range sh.Slots {
			v = append(v, slotRange{r.Start, r.End, master})
		}
	}
	slices.SortFunc(v, func(a, b slotRange) int { return int(a.start - b.start) })
	// Merge adjacent ranges of one master, so that views compare equal
	// however a node splits them.
	merged := v[:0]
	for _, r := range v {
		if n := len(merged); n > 0 && merged[n-1].master == r.master && merged[n-1].end+1 == r.start {
			merged[n-1].end = r.end
			continue
		}
		merged = append(merged, r)
	}
	return merged, nil
}

// anyView is the view of the first live node that answers.
func (c *Cluster) anyView(ctx context.Context) (view, error) {
	var errs []error
	for _, s := range c.Nodes {
		if !s.alive() {
			continue
		}
		v, err := c.view(ctx, s)
		if err == nil {
			return v, nil
		}
		errs = append(errs, err)
	}
	if errs == nil {
		return nil, errors.New("no node of the cluster is up")
	}
	return nil, errors.Join(errs...)
}

// dump is every live node's CLUSTER NODES, for a failure message.
func (c *Cluster) dump() string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var b strings.Builder
	for _, s := range c.Nodes {
		if !s.alive() {
			fmt.Fprintf(&b, "%s: down\n", s.Addr)
			continue
		}
		nodes, err := c.clients[s].ClusterNodes(ctx).Result()
		if err != nil {
			fmt.Fprintf(&b, "%s: CLUSTER NODES: %v\n", s.Addr, err)
			continue
		}
		fmt.Fprintf(&b, "%s: CLUSTER NODES:\n%s", s.Addr, nodes)
	}
	return b.String()
}

// alive says the server's process has not exited.
func (s *Server) alive() bool {
	select {
	case <-s.exited:
		return false
	default:
		return true
	}
}

// infoField is the value of key in the "key:value" lines of INFO or CLUSTER
// INFO, or "".
func infoField(info, key string) string {
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(strings.TrimRight(line, "\r\n"), key+":"); ok {
			return v
		}
	}
	return ""
}

// keySlot is the cluster hash slot of key: CRC16 of the key, or of its hash
// tag (the part between the first "{" and the next "}", when not empty),
// modulo 16384.
func keySlot(key string) uint16 {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	return crc16(key) % clusterSlots
}

// keyIn is a key whose slot is between start and end.
func keyIn(start, end int64) string {
	for i := 0; ; i++ {
		key := "redistest:" + strconv.Itoa(i)
		if s := int64(keySlot(key)); start <= s && s <= end {
			return key
		}
	}
}

// crc16 is the CRC16-CCITT (XMODEM) that Redis Cluster uses.
func crc16(s string) uint16 {
	var crc uint16
	for i := 0; i < len(s); i++ {
		crc ^= uint16(s[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}
