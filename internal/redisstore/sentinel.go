package redisstore

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis Sentinel fails a master over to one of its replicas. What it adds to
// one Redis is here: a client that asks the sentinels where the master is,
// and the count of the master's replicas, which strict writes wait for
// (runDurable) as on a cluster. The subscriber needs nothing more: each of
// its (re)subscriptions dials the master the sentinels name, and enables
// keyspace events there (see listen).

// SentinelOptions name a master that Redis Sentinel watches.
type SentinelOptions struct {
	// Addrs are the sentinels, "host:port,host:port,...", or a URL
	// "redis://[user:password@]host:port[/db]?addr=host:port&addr=..."
	// (rediss:// for TLS, to the sentinels and to Redis alike) whose user
	// and password are Redis's, as in REDIS_URL.
	Addrs string
	// Master is the name the sentinels know the master by; a URL may give
	// it instead as master_name=.
	Master string
	// Password is the sentinels' own (requirepass in sentinel.conf), when
	// they have one.
	Password string
}

// NewSentinelClient opens a client of the master that the sentinels name,
// which follows a failover: each new connection asks them where the master
// is now, and connections to a master that lost its place are dropped. It
// has the timeouts of NewClient, and its errors never repeat a URL.
func NewSentinelClient(so SentinelOptions, files TLSFiles) (*redis.Client, error) {
	const variable = "REDIS_SENTINEL_ADDRS"
	opts := &redis.FailoverOptions{}
	if strings.Contains(so.Addrs, "://") {
		u, err := url.Parse(so.Addrs)
		if err != nil {
			return nil, fmt.Errorf("%s is not a valid redis:// or rediss:// URL: %w", variable, withoutURL(err))
		}
		for _, q := range []string{"username", "password"} {
			if u.Query().Has(q) {
				return nil, fmt.Errorf("%s: give Redis's user and password as the URL's user info (redis://user:password@host:port?addr=...), not as %s=", variable, q)
			}
		}
		if opts, err = parseURL(so.Addrs, variable, "URL", redis.ParseFailoverURL); err != nil {
			return nil, err
		}
		// go-redis reads the user info as the sentinels' credentials; here
		// it is Redis's, as in every other Redis URL of the service.
		opts.Username, opts.Password = opts.SentinelUsername, opts.SentinelPassword
		opts.SentinelUsername, opts.SentinelPassword = "", ""
		if opts.TLSConfig != nil {
			// The master and the replicas are other hosts than the first
			// sentinel: an empty name makes each connection check the
			// certificate against the host it dials.
			opts.TLSConfig.ServerName = ""
		}
	} else {
		for a := range strings.SplitSeq(so.Addrs, ",") {
			a = strings.TrimSpace(a)
			if _, _, err := net.SplitHostPort(a); err != nil || a == "" {
				return nil, fmt.Errorf("%s: %q is not a host:port; give the sentinels as host:port,host:port or as a redis:// URL", variable, a)
			}
			opts.SentinelAddrs = append(opts.SentinelAddrs, a)
		}
	}
	switch {
	case so.Master != "" && opts.MasterName != "" && so.Master != opts.MasterName:
		return nil, fmt.Errorf("REDIS_SENTINEL_MASTER is %q but %s names master_name=%q; give one", so.Master, variable, opts.MasterName)
	case so.Master != "":
		opts.MasterName = so.Master
	case opts.MasterName == "":
		return nil, fmt.Errorf("REDIS_SENTINEL_MASTER is not set: give the name the sentinels know the master by (sentinel monitor <name> ...)")
	}
	opts.SentinelPassword = so.Password
	if err := useTLSFiles(opts.TLSConfig, files, variable); err != nil {
		return nil, err
	}
	limit(&opts.DialTimeout, &opts.ReadTimeout, &opts.WriteTimeout, &opts.PoolTimeout, &opts.MaxRetries, &opts.DialerRetries)
	return redis.NewFailoverClient(opts), nil
}

// replicasEvery is how often the store counts the master's replicas under
// Sentinel.
const replicasEvery = time.Second

// followReplicas counts, every replicasEvery, the replicas that are in sync
// with the master the client is on, until ctx ends: the count a strict
// write's WAIT starts from (see runDurable), which the write itself
// corrects from ROLE; it runs in the strict mode only, the fast mode
// waiting for nothing. No write goes without the wait whatever the count:
// right after a failover it is 0, and a strict write still needs one
// replica.
func (s *Store) followReplicas(ctx context.Context, parts []*partition) error {
	tick := time.NewTicker(replicasEvery)
	defer tick.Stop()
	for {
		if n, err := s.onlineReplicas(ctx); err == nil {
			for _, p := range parts {
				p.replicas.Store(n)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// onlineReplicas reads INFO replication from the master and counts its
// replicas whose state is online (those that acknowledge writes).
func (s *Store) onlineReplicas(ctx context.Context) (int32, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	info, err := s.rdb.Info(ctx, "replication").Result()
	if err != nil {
		return 0, storeError(err)
	}
	var n int32
	for line := range strings.SplitSeq(info, "\n") {
		// slave0:ip=127.0.0.1,port=6380,state=online,offset=42,lag=0
		if strings.HasPrefix(line, "slave") && strings.Contains(line, "state=online") {
			n++
		}
	}
	return n, nil
}
