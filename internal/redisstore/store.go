// Package redisstore keeps orders and their expiration log in Redis. Each
// state change is one Lua script (see scripts.go); a sweeper expires orders at
// their deadline and a subscriber to Redis's expired-key events wakes it, so
// that orders expire on time although Redis itself emits those events late.
package redisstore

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/orderexpiry/orderexpiry/internal/order"
)

// Options configure a Store.
type Options struct {
	// Retention is how long closed orders and expiration events are kept.
	Retention time.Duration
	// Logger receives the store's warnings; slog.Default() when nil.
	Logger *slog.Logger
	// OnExpire, when set, is called by the sweeper after each pass that
	// expired orders, with how many it expired and how many of those it
	// claimed more than a second after their deadline by Redis's clock
	// (orders caught up after an outage, a restart or a lost wake-up). It
	// is also called for an order that a call (Get, Complete, Cancel,
	// Checkout) finds due and expires itself. It must not block.
	OnExpire func(expired, caughtUp int)
	// Partitions is the number of partitions to record when the store is
	// new (see layout); 0 means 1. A store keeps the number it started
	// with: the partition of an order follows from it.
	Partitions int
}

// Store is the order store on one Redis database or on a Redis Cluster.
type Store struct {
	rdb redis.UniversalClient
	// cluster is rdb when it is a Redis Cluster, nil on one Redis.
	cluster   *redis.ClusterClient
	db        int
	want      int
	retention time.Duration
	log       *slog.Logger
	onExpire  func(expired, caughtUp int)

	// parts is set by the first successful layout.
	parts atomic.Pointer[[]*partition]

	// masters is how many masters the subscriber listens to, subscribed
	// how many of those subscriptions are up.
	masters, subscribed atomic.Int32

	// configWarning warns once that CONFIG is refused.
	configWarning sync.Once
}

// New returns a Store on a client of one Redis (*redis.Client) or of a
// Redis Cluster (*redis.ClusterClient, see NewClusterClient). It does not
// take ownership of the client, and does not call Redis yet.
func New(rdb redis.UniversalClient, opts Options) *Store {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	s := &Store{
		rdb:       rdb,
		want:      max(opts.Partitions, 1),
		retention: opts.Retention,
		log:       opts.Logger,
		onExpire:  opts.OnExpire,
	}
	switch c := rdb.(type) {
	case *redis.Client:
		s.db = c.Options().DB
	case *redis.ClusterClient:
		s.cluster = c
	}
	return s
}

// TLSFiles name PEM files for Redis over TLS (rediss:// URLs): the CA that
// signed Redis's certificate when it is not one the system trusts, and a
// client certificate and key when Redis asks for one. Empty names are
// unused.
type TLSFiles struct {
	CA, Cert, Key string
}

// NewClient opens a client for a redis:// or rediss:// URL, with timeouts
// short enough that a call to an unreachable Redis fails within a second
// instead of hanging. Its errors never repeat the URL, which may hold a
// password.
func NewClient(rawURL string, files TLSFiles) (*redis.Client, error) {
	opts, err := redis.ParseURL(rawURL)
	if err != nil {
		return nil, fmt.Errorf("REDIS_URL is not a valid redis:// or rediss:// URL: %w", withoutURL(err))
	}
	if err := useTLSFiles(opts.TLSConfig, files, "REDIS_URL"); err != nil {
		return nil, err
	}
	opts.DialTimeout = dialTimeout
	opts.ReadTimeout = ioTimeout
	opts.WriteTimeout = ioTimeout
	opts.PoolTimeout = ioTimeout
	// No retries inside the client: a retried script may have run already
	// (a lost reply), and a retry doubles the time a caller waits on a
	// Redis that is gone. Callers retry; every script is safe to repeat.
	opts.MaxRetries = -1
	// go-redis dials up to 5 times per connection, 100ms apart, by default;
	// one dial per call keeps a call to a host that does not answer near a
	// second.
	opts.DialerRetries = 1
	return redis.NewClient(opts), nil
}

// dialTimeout and ioTimeout bound a connection's dial and each read, write
// or wait for a pooled connection, within callTimeout.
const (
	dialTimeout = 500 * time.Millisecond
	ioTimeout   = 800 * time.Millisecond
)

// callTimeout bounds every call to Redis, so that a caller hears
// UNAVAILABLE within a second from a Redis that stopped answering.
const callTimeout = 900 * time.Millisecond

// run runs a script of partition p under callTimeout.
func (s *Store) run(ctx context.Context, p *partition, script *redis.Script, args ...any) ([]any, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	res, err := script.Run(ctx, s.rdb, p.keys.scriptKeys(), s.args(p, args...)...).Slice()
	return res, storeError(err)
}

func (s *Store) args(p *partition, extra ...any) []any {
	return append([]any{p.keys.prefix, s.retention.Milliseconds()}, extra...)
}

// Checkout creates a pending order, or returns the one already pending under
// this id with created false.
func (s *Store) Checkout(ctx context.Context, id string, ttl time.Duration, md map[string]string) (order.Order, bool, error) {
	meta, err := encodeMetadata(md)
	if err != nil {
		return order.Order{}, false, err
	}
	parts, err := s.layout(ctx)
	if err != nil {
		return order.Order{}, false, err
	}
	p := partitionOf(id, parts)
	res, err := s.runDurable(ctx, p, checkoutScript, checkoutArgs(id, ttl, meta)...)
	if err != nil {
		return order.Order{}, false, err
	}
	code, o, err := s.parseReply(id, res)
	if err != nil {
		return order.Order{}, false, err
	}
	// A checkout that brings the earliest deadline forward publishes on the
	// wake channel for every replica's sweeper. This replica's own sweeper
	// is also woken here when the order is due before it planned to look,
	// so that it keeps time while its subscription is down.
	if code == "created" && o.Deadline.UnixMilli() < p.nextSweep.Load() {
		p.wakeUp()
	}
	return o, code == "created", nil
}

// ttlKeyGrace is how much longer an order's ttl key lives than the order.
// The sweeper deletes the key when it claims the order, normally within a
// few milliseconds of the deadline; Redis expires the key itself, and
// publishes the expired event that wakes every sweeper, only when no
// sweeper has claimed the order within the grace: its wake-up was lost, or
// every sweeper is down or far behind.
// Were the key to die at the deadline, every claim would find it already
// expired in Redis's eyes, and Redis would expire and publish it anyway:
// one more deletion and one more event per order, for nothing. The order's
// truth is the deadline in the index, never the ttl key.
const ttlKeyGrace = 100 * time.Millisecond

// checkoutArgs are checkoutScript's own arguments.
func checkoutArgs(id string, ttl time.Duration, meta string) []any {
	return []any{id, ttl.Milliseconds(), meta, (ttl + ttlKeyGrace).Milliseconds()}
}

// Get returns an order, pending or closed.
func (s *Store) Get(ctx context.Context, id string) (order.Order, error) {
	parts, err := s.layout(ctx)
	if err != nil {
		return order.Order{}, err
	}
	res, err := s.run(ctx, partitionOf(id, parts), getScript, id)
	if err != nil {
		return order.Order{}, err
	}
	code, o, err := s.parseReply(id, res)
	if err != nil {
		return order.Order{}, err
	}
	if code == "missing" {
		return order.Order{}, order.NotFound(id)
	}
	return o, nil
}

// Complete marks a pending order as paid.
func (s *Store) Complete(ctx context.Context, id string) (order.Order, error) {
	return s.finish(ctx, id, order.StatusCompleted)
}

// Cancel withdraws a pending order.
func (s *Store) Cancel(ctx context.Context, id string) (order.Order, error) {
	return s.finish(ctx, id, order.StatusCancelled)
}

func (s *Store) finish(ctx context.Context, id string, to order.Status) (order.Order, error) {
	parts, err := s.layout(ctx)
	if err != nil {
		return order.Order{}, err
	}
	res, err := s.runDurable(ctx, partitionOf(id, parts), finishScript, id, to.String())
	if err != nil {
		return order.Order{}, err
	}
	code, o, err := s.parseReply(id, res)
	if err != nil {
		return order.Order{}, err
	}
	switch code {
	case "ok":
		return o, nil
	case "missing":
		return order.Order{}, order.NotFound(id)
	default:
		return order.Order{}, order.NotPending(o, to)
	}
}

// Events returns up to limit events of a partition after the cursor, in log
// order. When there are none and wait is positive, it blocks until one
// arrives or wait passes. In a Redis Cluster it reads a replica of the
// partition's master where there is one: an event is seen only once a
// replica has it, so that a failover, which may lose the master's last
// writes, can never take back an event that a watcher saw.
func (s *Store) Events(ctx context.Context, partition int, after order.Cursor, limit int, wait time.Duration) ([]order.Event, error) {
	p, err := s.partition(ctx, partition)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, max(wait, 0)+callTimeout)
	defer cancel()
	var msgs []redis.XMessage
	if wait > 0 {
		streams, err := s.rdb.XRead(ctx, &redis.XReadArgs{
			Streams: []string{p.keys.events, after.String()},
			Count:   int64(limit),
			Block:   wait,
		}).Result()
		if errors.Is(err, redis.Nil) {
			return nil, nil
		}
		if err != nil {
			return nil, storeError(err)
		}
		if len(streams) > 0 {
			msgs = streams[0].Messages
		}
	} else {
		var err error
		msgs, err = s.rdb.XRangeN(ctx, p.keys.events, "("+after.String(), "+", int64(limit)).Result()
		if err != nil {
			return nil, storeError(err)
		}
	}
	events := make([]order.Event, 0, len(msgs))
	for _, m := range msgs {
		ev, err := parseEvent(m)
		if err != nil {
			return nil, err
		}
		ev.Partition = partition
		events = append(events, ev)
	}
	return events, nil
}

// Tail returns the cursor of the last event in a partition's log, or the
// zero cursor when it is empty.
func (s *Store) Tail(ctx context.Context, partition int) (order.Cursor, error) {
	p, err := s.partition(ctx, partition)
	if err != nil {
		return order.Cursor{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	msgs, err := s.rdb.XRevRangeN(ctx, p.keys.events, "+", "-", 1).Result()
	if err != nil {
		return order.Cursor{}, storeError(err)
	}
	if len(msgs) == 0 {
		return order.Cursor{}, nil
	}
	return order.ParseCursor(msgs[0].ID)
}

// CheckCursor says whether a watch can resume after each cursor without a
// gap; one read of Redis's clock serves them all.
func (s *Store) CheckCursor(ctx context.Context, cursors ...order.Cursor) error {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	now, err := s.rdb.Time(ctx).Result()
	if err != nil {
		return storeError(err)
	}
	for _, c := range cursors {
		if err := order.CheckCursor(c, uint64(now.UnixMilli()), uint64(s.retention.Milliseconds())); err != nil {
			return err
		}
	}
	return nil
}

// Ping checks that Redis answers.
func (s *Store) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	return storeError(s.rdb.Ping(ctx).Err())
}

// storeError translates a Redis client error into the domain's terms: faults
// of the connection, of a Redis that cannot serve now or refuses our
// credentials, or a call that ran out of time are Unavailable; anything else (a script error, a wrong
// reply) stays an internal error.
func storeError(err error) error {
	if err == nil || errors.Is(err, context.Canceled) {
		return err
	}
	var rerr redis.Error
	if errors.As(err, &rerr) {
		msg := rerr.Error()
		for _, p := range []string{"LOADING", "READONLY", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "BUSY", "NOREPLICAS", "WRONGPASS", "NOAUTH", "MOVED", "ASK"} {
			if strings.HasPrefix(msg, p) {
				return order.Unavailable(err)
			}
		}
		return fmt.Errorf("redis: %w", err)
	}
	return order.Unavailable(err)
}

// parseReply reads the {code, record, now} reply of the order scripts.
func (s *Store) parseReply(id string, res []any) (string, order.Order, error) {
	if len(res) != 5 {
		return "", order.Order{}, fmt.Errorf("redis: script reply has %d elements, want 5", len(res))
	}
	// The call found the order due and expired it: count it as the
	// sweeper's expirations are.
	if n, _ := res[3].(int64); n > 0 && s.onExpire != nil {
		caught, _ := res[4].(int64)
		s.onExpire(int(n), int(caught))
	}
	code, _ := res[0].(string)
	rec, _ := res[1].(string)
	now, _ := res[2].(int64)
	if code == "missing" {
		return code, order.Order{}, nil
	}
	o, err := parseRecord(id, rec, now)
	return code, o, err
}

// parseRecord reads "<status> <created> <deadline> <closed> <metadata>".
func parseRecord(id, rec string, nowMs int64) (order.Order, error) {
	f := strings.SplitN(rec, " ", 5)
	if len(f) != 5 {
		return order.Order{}, fmt.Errorf("redis: malformed record for order %q: %q", id, rec)
	}
	var ms [3]int64
	for i := range ms {
		v, err := strconv.ParseInt(f[i+1], 10, 64)
		if err != nil {
			return order.Order{}, fmt.Errorf("redis: malformed record for order %q: %q", id, rec)
		}
		ms[i] = v
	}
	md, err := decodeMetadata(f[4])
	if err != nil {
		return order.Order{}, fmt.Errorf("redis: order %q: %w", id, err)
	}
	o := order.Order{
		ID:        id,
		Status:    order.ParseStatus(f[0]),
		CreatedAt: time.UnixMilli(ms[0]),
		Deadline:  time.UnixMilli(ms[1]),
		Metadata:  md,
	}
	if o.Status == order.StatusPending {
		o.TTLRemaining = time.Duration(ms[1]-nowMs) * time.Millisecond
	} else {
		o.ClosedAt = time.UnixMilli(ms[2])
	}
	return o, nil
}

func parseEvent(m redis.XMessage) (order.Event, error) {
	c, err := order.ParseCursor(m.ID)
	if err != nil {
		return order.Event{}, fmt.Errorf("redis: event id %q: %w", m.ID, err)
	}
	field := func(k string) string { s, _ := m.Values[k].(string); return s }
	var ms [3]int64
	for i, k := range []string{"c", "d", "x"} {
		if ms[i], err = strconv.ParseInt(field(k), 10, 64); err != nil {
			return order.Event{}, fmt.Errorf("redis: event %s: field %s: %w", m.ID, k, err)
		}
	}
	md, err := decodeMetadata(field("m"))
	if err != nil {
		return order.Event{}, fmt.Errorf("redis: event %s: %w", m.ID, err)
	}
	return order.Event{
		Cursor:    c,
		OrderID:   field("id"),
		CreatedAt: time.UnixMilli(ms[0]),
		Deadline:  time.UnixMilli(ms[1]),
		ExpiredAt: time.UnixMilli(ms[2]),
		Metadata:  md,
	}, nil
}

// encodeMetadata stores no metadata as the empty string, which keeps a
// pending order without metadata a few bytes smaller in Redis.
func encodeMetadata(md map[string]string) (string, error) {
	if len(md) == 0 {
		return "", nil
	}
	b, err := json.Marshal(md)
	return string(b), err
}

func decodeMetadata(s string) (map[string]string, error) {
	if s == "" {
		return nil, nil
	}
	var md map[string]string
	if err := json.Unmarshal([]byte(s), &md); err != nil {
		return nil, fmt.Errorf("malformed metadata: %w", err)
	}
	return md, nil
}

// withoutURL drops the URL that a *url.Error repeats: it may hold a
// password.
func withoutURL(err error) error {
	var uerr *url.Error
	if errors.As(err, &uerr) {
		return uerr.Err
	}
	return err
}

// useTLSFiles adds files to c, the TLS configuration of a client of the
// store named by the variable name; c is nil unless the URL is rediss://.
func useTLSFiles(c *tls.Config, files TLSFiles, name string) error {
	if files == (TLSFiles{}) {
		return nil
	}
	if c == nil {
		return fmt.Errorf("a Redis CA or client certificate was given, but %s is not a rediss:// URL", name)
	}
	return addTLSFiles(c, files)
}

func addTLSFiles(c *tls.Config, files TLSFiles) error {
	if files.CA != "" {
		b, err := os.ReadFile(files.CA)
		if err != nil {
			return fmt.Errorf("Redis CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(b) {
			return fmt.Errorf("Redis CA: %s holds no PEM certificate", files.CA)
		}
		c.RootCAs = pool
	}
	if files.Cert != "" || files.Key != "" {
		cert, err := tls.LoadX509KeyPair(files.Cert, files.Key)
		if err != nil {
			return fmt.Errorf("Redis client certificate: %w", err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return nil
}

// SetLogger sends go-redis's own messages (dial failures and the like,
// which the store reports in its own words) to log at debug level. go-redis
// has one logger per process.
func SetLogger(log *slog.Logger) {
	redis.SetLogger(slogAdapter{log})
}

type slogAdapter struct{ log *slog.Logger }

func (a slogAdapter) Printf(ctx context.Context, format string, v ...any) {
	a.log.DebugContext(ctx, "go-redis: "+fmt.Sprintf(format, v...))
}
