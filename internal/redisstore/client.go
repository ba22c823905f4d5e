package redisstore

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/orderexpiry/orderexpiry/internal/order"
)

// TLSFiles name PEM files for Redis over TLS (rediss:// URLs): the CA that
// signed Redis's certificate when it is not one the system trusts, and a
// client certificate and key when Redis asks for one. Empty names are
// unused.
type TLSFiles struct {
	CA, Cert, Key string
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

// NewClient opens a client for a redis:// or rediss:// URL, with timeouts
// short enough that a call to an unreachable Redis fails within a second
// instead of hanging. Its errors never repeat the URL, which may hold a
// password.
func NewClient(rawURL string, files TLSFiles) (*redis.Client, error) {
	opts, err := parseURL(rawURL, "REDIS_URL", "URL", redis.ParseURL)
	if err != nil {
		return nil, err
	}
	if err := useTLSFiles(opts.TLSConfig, files, "REDIS_URL"); err != nil {
		return nil, err
	}
	limit(&opts.DialTimeout, &opts.ReadTimeout, &opts.WriteTimeout, &opts.PoolTimeout, &opts.MaxRetries, &opts.DialerRetries)
	return redis.NewClient(opts), nil
}

// NewClusterClient opens a client for a Redis Cluster named by its seed
// nodes: either "host:port,host:port,..." or a URL in go-redis's cluster
// form, "redis://[user:password@]host:port?addr=host:port&addr=host:port"
// (rediss:// for TLS). Any live seed is enough; the client learns the rest
// of the cluster from it. Like NewClient, its errors never repeat a URL.
func NewClusterClient(spec string, files TLSFiles) (*redis.ClusterClient, error) {
	opts := &redis.ClusterOptions{}
	if strings.Contains(spec, "://") {
		var err error
		if opts, err = parseURL(spec, "REDIS_CLUSTER_ADDRS", "cluster URL", redis.ParseClusterURL); err != nil {
			return nil, err
		}
	} else {
		for a := range strings.SplitSeq(spec, ",") {
			a = strings.TrimSpace(a)
			if _, _, err := net.SplitHostPort(a); err != nil || a == "" {
				return nil, fmt.Errorf("REDIS_CLUSTER_ADDRS: %q is not a host:port; give the seeds as host:port,host:port or as a redis:// URL", a)
			}
			opts.Addrs = append(opts.Addrs, a)
		}
	}
	if err := useTLSFiles(opts.TLSConfig, files, "REDIS_CLUSTER_ADDRS"); err != nil {
		return nil, err
	}
	// Redirections stay on whatever MaxRetries says: following MOVED after
	// a failover or a resharding is the point.
	limit(&opts.DialTimeout, &opts.ReadTimeout, &opts.WriteTimeout, &opts.PoolTimeout, &opts.MaxRetries, &opts.DialerRetries)
	// Every partition has a log reader blocked in XREAD on its node, on top
	// of the calls; connections open only when needed, so the bound costs
	// nothing until it is used.
	opts.PoolSize = 10*runtime.GOMAXPROCS(0) + order.MaxPartitions
	// Reads of the event log go to replicas: see Events.
	opts.ReadOnly = true
	// go-redis learns a new topology from MOVED replies, not from a dead
	// master's refused connections; it otherwise reloads once a minute.
	opts.ClusterStateReloadInterval = time.Second
	return redis.NewClusterClient(opts), nil
}

// parseURL reads a redis:// or rediss:// URL with parse, go-redis's
// ParseURL or ParseClusterURL. Its error names the variable that gave the
// URL and what it should be, and never repeats the URL: it may hold a
// password.
func parseURL[O any](raw, variable, what string, parse func(string) (*O, error)) (*O, error) {
	opts, err := parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%s is not a valid redis:// or rediss:// %s: %w", variable, what, withoutURL(err))
	}
	return opts, nil
}

// limit sets the bounds every client of the store has, given the fields of
// its options (go-redis's options for one Redis and for a cluster are
// distinct types with the same fields).
func limit(dial, read, write, pool *time.Duration, maxRetries, dialerRetries *int) {
	*dial = dialTimeout
	*read, *write, *pool = ioTimeout, ioTimeout, ioTimeout
	// No retries inside the client: a retried script may have run already
	// (a lost reply), and a retry doubles the time a caller waits on a
	// Redis that is gone. Callers retry; every script is safe to repeat.
	*maxRetries = -1
	// go-redis dials up to 5 times per connection, 100ms apart, by default;
	// one dial per call keeps a call to a host that does not answer near a
	// second.
	*dialerRetries = 1
}

// nodeOptions are the options of a client to one node of the cluster, for
// its subscription: the cluster's credentials and TLS, the store's bounds.
func (s *Store) nodeOptions(addr string) *redis.Options {
	o := s.cluster.Options()
	opts := &redis.Options{
		Addr:      addr,
		Username:  o.Username,
		Password:  o.Password,
		TLSConfig: o.TLSConfig,
		PoolSize:  2,
	}
	limit(&opts.DialTimeout, &opts.ReadTimeout, &opts.WriteTimeout, &opts.PoolTimeout, &opts.MaxRetries, &opts.DialerRetries)
	return opts
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

// goRedisLogs are the loggers of the running stores, which go-redis's own
// messages (dial failures and the like, which a store reports in its own
// words too) go to at debug level. go-redis has one logger per process, and
// its messages do not say which client they are about: with several stores
// running in one process (the end-to-end tests run several servers in
// theirs), each store's logger gets every message, rather than the store
// started last getting those of all the others.
var goRedisLogs struct {
	install sync.Once
	mu      sync.Mutex
	logs    []*slog.Logger
}

// shareGoRedisLog sends go-redis's messages to log too, until remove is
// called.
func shareGoRedisLog(log *slog.Logger) (remove func()) {
	l := &goRedisLogs
	l.install.Do(func() { redis.SetLogger(goRedisLog{}) })
	l.mu.Lock()
	l.logs = append(l.logs, log)
	l.mu.Unlock()
	return func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		if i := slices.Index(l.logs, log); i >= 0 {
			l.logs = slices.Delete(l.logs, i, i+1)
		}
	}
}

// goRedisLog is go-redis's logger: it writes to every logger in goRedisLogs.
type goRedisLog struct{}

func (goRedisLog) Printf(ctx context.Context, format string, v ...any) {
	l := &goRedisLogs
	l.mu.Lock()
	logs := slices.Clone(l.logs)
	l.mu.Unlock()
	msg := "go-redis: " + fmt.Sprintf(format, v...)
	for _, log := range logs {
		log.DebugContext(ctx, msg)
	}
}
