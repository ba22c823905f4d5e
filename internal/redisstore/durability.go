package redisstore

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/orderexpiry/orderexpiry/internal/order"
)

// Durability is what an OK to a write promises (see docs/reliability.md).
//
// Redis replicates asynchronously and, unless told otherwise, fsyncs its
// AOF once a second: a master that dies right after answering a write can
// take the write with it, and the replica promoted in its place, or the
// Redis restarted from its AOF, does not have it. The store's writes that
// a caller is answered for (checkout, complete, cancel, reschedule, each
// item of a batch, a bulk operation's start, changes and cancelling,
// group create and delete, ack, nack, release and redrive) go through
// runDurable or durably, which in the strict mode make the OK wait for the
// write to be where one Redis failure cannot undo it. Their scripts are
// declared confirmed in scripts.go, and run.go sends each such script that
// way; TestAcknowledgedWritesWaitForReplicas fails for one that goes
// without its WAIT.
type Durability int

const (
	// DurabilityFast answers a write as soon as the Redis master has
	// applied it. A failover loses what the replicas had not received
	// yet, and a crash of a Redis without replicas loses what its AOF had
	// not written (or fsynced, for a machine crash).
	DurabilityFast Durability = iota
	// DurabilityStrict answers a write only once it is on every replica
	// connected to the master, at least one under Sentinel and on a
	// cluster, and, on one Redis, once it is in an AOF fsynced at every
	// write (appendfsync always). A write that is not confirmed within
	// replicaWait is answered UNAVAILABLE: its outcome is unknown, and
	// every such write is safe to repeat.
	DurabilityStrict
)

// String is the mode's name, as the flag takes it.
func (d Durability) String() string {
	if d == DurabilityStrict {
		return "strict"
	}
	return "fast"
}

// ParseDurability reads a mode's name.
func ParseDurability(s string) (Durability, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "strict":
		return DurabilityStrict, nil
	case "fast":
		return DurabilityFast, nil
	}
	return 0, fmt.Errorf("%q is not a durability mode: give strict (an OK means the write survives one Redis failure) or fast (an OK means the Redis master has it)", s)
}

// replicaWait bounds how long a strict write waits for the replicas (WAIT)
// once Redis has applied it: past it, the call answers UNAVAILABLE. It
// leaves the script and the round trip most of the rest of callTimeout.
const replicaWait = 500 * time.Millisecond

// errUnconfirmed is the message of a strict write that Redis applied but
// could not confirm as durable in time.
const errUnconfirmed = "the write was not confirmed durable in time (%s): its outcome is unknown, since a failover of the Redis master now could still undo it; " +
	"repeating the call is safe (see docs/reliability.md)"

// unconfirmed is the error of a write that Redis applied but that did not
// reach every replica within replicaWait.
func (s *Store) unconfirmed(detail string) error {
	s.unconfirmedWrites.Add(1)
	return &order.Error{Kind: order.KindUnavailable, Reason: order.ReasonWriteUnconfirmed, Msg: fmt.Sprintf(errUnconfirmed, detail),
		Err: fmt.Errorf("redis: %s", detail)}
}

// confirmation is what a strict write appends to its pipeline, on the same
// connection, after the writes it confirms: WAIT, whose count is of the
// replicas that acknowledged everything this connection wrote before it,
// and ROLE, the replicas the master has now.
type confirmation struct {
	sync, wait, role *redis.Cmd
	// asked is the number WAIT was given; floor the fewest replicas that
	// must confirm whatever ROLE says (1 under Sentinel and on a cluster,
	// where a master without a replica cannot promise anything).
	asked, floor int64
}

// syncKey is the barrier's key for a write to key: in key's slot of a
// Redis Cluster (Redis hashes the text between the first { and the next }
// when there is any).
func syncKey(key string) string {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			return "oe:{" + key[i+1:i+1+j] + "}:sync"
		}
	}
	return "oe:sync{" + key + "}"
}

// queueConfirm appends the confirmation of the writes queued on pipe
// before it, which are writes to key's slot; known is the number of
// replicas the master had when last seen. It returns nil in the fast mode:
// nothing is waited for.
func (s *Store) queueConfirm(ctx context.Context, pipe redis.Pipeliner, known int32, key string) *confirmation {
	if s.durability != DurabilityStrict {
		return nil
	}
	floor := int64(0)
	if s.sentinel || s.cluster != nil {
		floor = 1
	}
	c := &confirmation{asked: max(int64(known), floor), floor: floor}
	c.sync = queue(ctx, pipe, syncScript, []string{syncKey(key)})
	c.wait = pipe.Do(ctx, "WAIT", c.asked, replicaWait.Milliseconds())
	c.role = pipe.Do(ctx, "ROLE")
	return c
}

// confirm checks a confirmation once its pipeline ran on conn: nil when
// every replica the master has (and at least floor) acknowledged the
// writes. When more replicas are connected than WAIT was asked for (a
// count read before a replica joined), it waits again, on the same
// connection, for all of them. It returns the replicas the master has, for
// the next write's count.
func (s *Store) confirm(ctx context.Context, conn *redis.Conn, c *confirmation, started time.Time) (int32, error) {
	if c == nil {
		return 0, nil
	}
	if err := c.sync.Err(); err != nil {
		return 0, s.nodeError(err)
	}
	acked, err := c.wait.Int64()
	if err != nil {
		return 0, s.nodeError(err)
	}
	replicas, err := roleReplicas(c.role)
	if err != nil {
		return 0, s.nodeError(err)
	}
	need := max(int64(replicas), c.floor)
	if acked < need && acked >= c.asked {
		// WAIT returned as soon as it had c.asked, before the replicas
		// that the count missed: they are waited for now.
		left := replicaWait - time.Since(started)
		if left > 0 {
			if acked, err = conn.Do(ctx, "WAIT", need, max(left.Milliseconds(), 1)).Int64(); err != nil {
				return int32(replicas), s.nodeError(err)
			}
		}
	}
	if acked < need {
		what := fmt.Sprintf("%d of the master's %d replicas confirmed it within %s", acked, replicas, replicaWait)
		if replicas == 0 {
			what = "the Redis master has no replica to confirm it, and a failover would promote one that does not have it"
		}
		return int32(replicas), s.unconfirmed(what)
	}
	return int32(replicas), nil
}

// roleReplicas counts the replicas in a master's ROLE reply:
// ["master", offset, [[ip, port, offset], ...]]. Redis lists only the
// replicas that are online, those WAIT counts.
func roleReplicas(cmd *redis.Cmd) (int, error) {
	v, err := cmd.Slice()
	if err != nil {
		return 0, err
	}
	if len(v) < 3 || v[0] != "master" {
		// A replica answered: the failover client's master lost its
		// place. The write itself was refused as READONLY, so this is
		// not reached for a write that ran.
		return 0, fmt.Errorf("redis: ROLE answered %v, not a master's role", v)
	}
	list, _ := v[2].([]any)
	return len(list), nil
}

// durably runs the writes that queue adds to a pipeline on node, one
// connection, writes to key's slot, and, in the strict mode, confirms them as runDurable
// confirms a script (see confirm). It is for the writes that are not an
// order's script: those of the consumer groups. The commands' own errors
// are the caller's to read; err is the pipeline's or the confirmation's.
func (s *Store) durably(ctx context.Context, node *redis.Client, key string, queue func(pipe durablePipe)) error {
	if err := s.durabilityRefusal(); err != nil {
		return err
	}
	conn := node.Conn()
	defer conn.Close()
	addr := node.Options().Addr
	v, _ := s.nodeReplicas.Load(addr)
	known, _ := v.(int32)
	started := time.Now()
	var c *confirmation
	cmds, err := conn.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		queue(durablePipe{pipe})
		c = s.queueConfirm(ctx, pipe, known, key)
		return nil
	})
	for _, cmd := range cmds {
		if _, moved := parseSlotMove(cmd.Err()); moved && s.cluster != nil {
			// Sent to the node the client's slot map names, not
			// through the cluster client: the map is learnt again so
			// that a repeat goes where the slot is now.
			s.cluster.ReloadState(ctx)
			break
		}
	}
	if c == nil {
		return nil // the fast mode: the caller reads each command's error
	}
	if err != nil && c.wait.Err() != nil {
		return s.nodeError(err)
	}
	n, err := s.confirm(ctx, conn, c, started)
	s.nodeReplicas.Store(addr, n)
	return err
}

// durablyOn runs, through durably, the writes that queue adds for each of
// keys (queue is given the key's index) on the master that holds the key:
// one pipeline, and one confirmation, per master, the masters in the order
// of their first key. A key's writes may therefore run before those of an
// earlier key on another master, and in the fast mode every master's run
// whatever another's did: writes that must follow others' success take a
// call of their own (see DeleteGroup).
func (s *Store) durablyOn(ctx context.Context, keys []string, queue func(pipe durablePipe, i int)) error {
	var nodes []*redis.Client
	byNode := map[*redis.Client][]int{}
	for i, k := range keys {
		node, err := s.groupNode(ctx, k)
		if err != nil {
			return err
		}
		if _, ok := byNode[node]; !ok {
			nodes = append(nodes, node)
		}
		byNode[node] = append(byNode[node], i)
	}
	for _, node := range nodes {
		err := s.durably(ctx, node, keys[byNode[node][0]], func(pipe durablePipe) {
			for _, i := range byNode[node] {
				queue(pipe, i)
			}
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// eventKeys are the partitions' event logs, in order.
func eventKeys(parts []*partition) []string {
	out := make([]string, len(parts))
	for i, p := range parts {
		out[i] = p.keys.events
	}
	return out
}

// groupNode returns the client of the master that holds key: the store's
// own client on one Redis or under Sentinel.
func (s *Store) groupNode(ctx context.Context, key string) (*redis.Client, error) {
	if s.cluster == nil {
		return s.rdb.(*redis.Client), nil
	}
	node, err := s.cluster.MasterForKey(ctx, key)
	return node, storeError(err)
}

// eachNode calls read, within callTimeout, on the Redis of the store, or on
// every master of a cluster at once, with the name a log line or a reason
// gives the node, and returns what each read returned; err is the first
// failure's.
func eachNode[T any](ctx context.Context, s *Store, read func(ctx context.Context, node *redis.Client, name string) (T, error)) ([]T, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	if s.cluster == nil {
		name := "Redis"
		if s.sentinel {
			name = "the Redis master the sentinels name"
		}
		v, err := read(ctx, s.rdb.(*redis.Client), name)
		if err != nil {
			return nil, err
		}
		return []T{v}, nil
	}
	var (
		mu  sync.Mutex
		out []T
	)
	err := s.cluster.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
		v, err := read(ctx, node, "Redis master "+node.Options().Addr)
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		out = append(out, v)
		return nil
	})
	return out, storeError(err)
}

// Redis's settings decide whether the strict mode can keep its promise.
// Ping reads them as it reads the eviction policy (see eviction.go): at the
// first call, then every policyEvery, every second while they are unsafe,
// and after every resubscription. While they are unsafe, Ping fails with
// the reason (health NOT_SERVING), and writes are refused with
// FAILED_PRECONDITION before they reach Redis, so that nothing is
// confirmed that the settings cannot keep. In the fast mode nothing is
// refused: the settings are logged once, with the loss they allow.

// settingsCheck is what the store last learnt of a group of Redis's
// settings.
type settingsCheck struct {
	// readAt is when they were last read, in unix ns; 0 makes the next
	// Ping read them.
	readAt atomic.Int64
	// unsafe is the reason writes are refused, nil while they are safe
	// (or cannot be read).
	unsafe atomic.Pointer[string]
	// refused warns once that CONFIG GET is refused.
	refused sync.Once
}

// due says whether Ping should read the settings now.
func (c *settingsCheck) due() bool {
	return c.unsafe.Load() != nil || time.Since(time.Unix(0, c.readAt.Load())) >= policyEvery
}

// set records what a read found, and returns the reason it changed to
// ("" for safe again) and whether it changed.
func (c *settingsCheck) set(reason string) (changed bool) {
	c.readAt.Store(time.Now().UnixNano())
	var next *string
	if reason != "" {
		next = &reason
	}
	prev := c.unsafe.Swap(next)
	return (next == nil) != (prev == nil) || (next != nil && *prev != reason)
}

// refusal is the error of a refused write while the settings are unsafe.
func (c *settingsCheck) refusal() error {
	if r := c.unsafe.Load(); r != nil {
		return order.Fail(order.ReasonStoreUnsafe, "", "%s", *r)
	}
	return nil
}

// checkDurability reads Redis's durability settings when due and returns
// an error naming what to change while they break the strict promise.
func (s *Store) checkDurability(ctx context.Context) error {
	return s.checkSettings(ctx, &s.dur, s.readDurability,
		"Redis's settings keep the strict durability's promise again: writes are accepted",
		func(err error) {
			// The fast mode enforces nothing: its log of the loss
			// window is all that is missed.
			if s.durability == DurabilityStrict {
				s.log.Warn("cannot read Redis's persistence and replication settings (CONFIG GET is refused): verify by hand "+
					"what the strict durability needs (docs/operations.md, Redis settings for production); writes still wait for every replica", "err", err)
			}
		})
}

// checkSettings reads a group of Redis's settings with read when c says it
// is due, logs each change (the reason, or safeAgain), and returns the
// refusal while they are unsafe. A Redis that cannot be reached now is
// Ping's own concern: they are read again at the next call. Managed Redis
// often refuses CONFIG: what cannot be read is taken as safe, and refused
// is called once, to tell the operator what to check by hand.
func (s *Store) checkSettings(ctx context.Context, c *settingsCheck, read func(context.Context) (string, error), safeAgain string, refused func(error)) error {
	if !c.due() {
		return nil
	}
	reason, err := read(ctx)
	switch {
	case err == nil:
		if c.set(reason) {
			if reason != "" {
				s.log.Error(reason)
			} else {
				s.log.Info(safeAgain)
			}
		}
	case order.KindOf(err) != order.KindUnavailable:
		c.readAt.Store(time.Now().UnixNano())
		c.refused.Do(func() { refused(err) })
	}
	return c.refusal()
}

// durabilityRefusal is the error of a write while the settings are unsafe.
func (s *Store) durabilityRefusal() error { return s.dur.refusal() }

// DurabilityUnsafe reports whether Redis's settings, as last read, break
// the strict mode's promise; writes are refused meanwhile.
func (s *Store) DurabilityUnsafe() bool { return s.dur.unsafe.Load() != nil }

// Durability is the store's mode.
func (s *Store) Durability() Durability { return s.durability }

// UnconfirmedWrites counts the strict writes answered UNAVAILABLE because
// their replicas did not confirm them in time.
func (s *Store) UnconfirmedWrites() uint64 { return s.unconfirmedWrites.Load() }

// nodeSettings is what one Redis says of its persistence and replication.
type nodeSettings struct {
	name                    string
	appendonly, appendfsync string
	minReplicas, minLag     string
	replicas                int
}

// readNode reads one node's settings.
func readNode(ctx context.Context, node *redis.Client, name string) (nodeSettings, error) {
	ns := nodeSettings{name: name}
	pipe := node.Pipeline()
	cfg := pipe.ConfigGet(ctx, "append*")
	minr := pipe.ConfigGet(ctx, "min-replicas-*")
	info := pipe.Info(ctx, "replication")
	if _, err := pipe.Exec(ctx); err != nil {
		if cfg.Err() != nil {
			return ns, storeError(cfg.Err())
		}
		return ns, storeError(err)
	}
	ns.appendonly, ns.appendfsync = cfg.Val()["appendonly"], cfg.Val()["appendfsync"]
	ns.minReplicas, ns.minLag = minr.Val()["min-replicas-to-write"], minr.Val()["min-replicas-max-lag"]
	for line := range strings.SplitSeq(info.Val(), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "connected_slaves:"); ok {
			ns.replicas, _ = strconv.Atoi(v)
		}
	}
	return ns, nil
}

// readDurability reads the settings of the Redis, or of every master of a
// cluster, and returns why they break the strict promise, or "".
func (s *Store) readDurability(ctx context.Context) (string, error) {
	nodes, err := eachNode(ctx, s, readNode)
	if err != nil {
		return "", err
	}
	if s.durability != DurabilityStrict {
		s.fastWindow.Do(func() { s.logFastWindow(nodes) })
		return "", nil
	}
	for _, ns := range nodes {
		if (s.sentinel || s.cluster != nil) && ns.replicas == 0 {
			// Not a setting but a state, often brief (a replica
			// resyncing after a failover), and of one master of a
			// cluster: its writes are answered UNAVAILABLE by the wait
			// itself, the others' go on.
			s.log.Warn("durability strict: "+ns.name+" has no replica connected: its writes are answered UNAVAILABLE until one connects, "+
				"since a write it alone has would be lost by the failover that promotes a replica in its place", "min_replicas_to_write", ns.minReplicas)
		}
		if r := s.strictReason(ns); r != "" {
			return r, nil
		}
	}
	return "", nil
}

// strictReason says why one node's settings break the strict promise, or "".
func (s *Store) strictReason(ns nodeSettings) string {
	const prefix = "durability strict: writes are refused: "
	if s.sentinel || s.cluster != nil {
		// A write waits for every replica of its master, at least one:
		// the master's own persistence adds nothing to that promise.
		return ""
	}
	if ns.appendonly != "yes" || ns.appendfsync != "always" {
		return prefix + fmt.Sprintf("%s has appendonly %s and appendfsync %s, so a write it confirms may not be on disk yet and a crash of Redis or of its machine loses it; "+
			"set appendonly yes and appendfsync always on it (CONFIG SET appendonly yes, CONFIG SET appendfsync always, and in its redis.conf), "+
			"or run with -durability=fast", ns.name, ns.appendonly, ns.appendfsync)
	}
	return ""
}

// logFastWindow says, once, what the fast mode can lose with these
// settings.
func (s *Store) logFastWindow(nodes []nodeSettings) {
	for _, ns := range nodes {
		attrs := []any{"redis", ns.name, "replicas", ns.replicas, "appendonly", ns.appendonly, "appendfsync", ns.appendfsync,
			"min_replicas_to_write", ns.minReplicas, "min_replicas_max_lag", ns.minLag}
		switch {
		case ns.replicas > 0 && ns.minReplicas != "" && ns.minReplicas != "0":
			s.log.Info("durability fast: a confirmed write is lost if the master fails before its replicas have it; "+
				"min-replicas-max-lag bounds that window to about its seconds of writes", attrs...)
		case ns.replicas > 0:
			s.log.Info("durability fast: a confirmed write is lost if the master fails before its replicas have it; "+
				"nothing bounds that window while the replicas lag (set min-replicas-to-write 1 and min-replicas-max-lag, or run with -durability=strict)", attrs...)
		case ns.appendonly == "yes" && ns.appendfsync == "always":
			s.log.Info("durability fast: Redis fsyncs its AOF at every write and has no replica: a confirmed write survives a crash as in the strict mode", attrs...)
		case ns.appendonly == "yes":
			s.log.Info("durability fast: a crash of Redis's machine loses the writes its AOF had not fsynced (appendfsync everysec: about a second; no: what the kernel had not written)", attrs...)
		default:
			s.log.Warn("durability fast: Redis keeps no AOF and has no replica: a restart of Redis loses every order (the store then reports its epoch lost)", attrs...)
		}
	}
}
