package redisstore

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// A Redis with a maxmemory makes room, when it is full, as its
// maxmemory-policy says. Only noeviction is safe for the store: Redis then
// refuses the checkouts that would grow it (see the shebangs in scripts.go) and
// keeps every key. The allkeys-* policies evict any key, the deadline index
// and the pending hash among them: acknowledged orders vanish, never expire,
// and no watcher hears of them. The volatile-* policies evict only keys with
// a ttl, which are the partitions' alarms (harmless: the deadline index is the truth)
// and the tombstones of completed and cancelled orders (an expired order's
// is a field of a hash without a ttl): an order completed or cancelled
// within the retention would then answer NOT_FOUND, and its id be taken for
// a new order, so that a payment's outcome is lost. They are unsafe too.
//
// Ping reads the policy at the first call and then every policyEvery (on
// each master of a cluster), and again after every resubscription, which
// follows a restart or a failover to another Redis. While the policy is
// unsafe, Ping fails with the reason (health says NOT_SERVING), checkouts are
// refused, and the policy is read at every Ping, so that a fix is seen within
// a second. Orders already pending still expire: the sweepers go on.

// policyEvery is how often Ping reads the eviction policy while it is safe;
// a variable for the tests.
var policyEvery = 10 * time.Second

// checkEviction reads the eviction policy when it is due (see above) and
// returns an error naming the setting to change while it is unsafe.
func (s *Store) checkEviction(ctx context.Context) error {
	return s.checkSettings(ctx, &s.ev, s.readEviction,
		"Redis's maxmemory-policy is safe again (noeviction): checkouts are accepted",
		func(err error) {
			s.log.Warn("cannot read Redis's maxmemory-policy (CONFIG GET is refused): verify by hand that it is noeviction; "+
				"any other policy lets a full Redis evict pending orders, which then never expire", "err", err)
		})
}

// readEviction reads maxmemory and maxmemory-policy from one Redis, or from
// every master of a cluster, and returns why they are unsafe, or "".
func (s *Store) readEviction(ctx context.Context) (string, error) {
	reasons, err := eachNode(ctx, s, evictionReason)
	if err != nil {
		return "", err
	}
	for _, r := range reasons {
		if r != "" {
			return r, nil
		}
	}
	return "", nil
}

// evictionReason reads the settings of one node, named name in the reason:
// "" when it evicts nothing.
func evictionReason(ctx context.Context, node *redis.Client, name string) (string, error) {
	cfg, err := node.ConfigGet(ctx, "maxmemory*").Result()
	if err != nil {
		return "", storeError(err)
	}
	policy := cfg["maxmemory-policy"]
	// Without a limit Redis never evicts, whatever the policy; the limit
	// is read again with the policy, so setting one later is seen.
	if limit, _ := strconv.ParseInt(cfg["maxmemory"], 10, 64); limit == 0 || policy == "noeviction" {
		return "", nil
	}
	return fmt.Sprintf("checkouts are refused: %s has maxmemory-policy %s (maxmemory %s bytes), which lets it evict the store's keys when it is full, "+
		"losing orders; set maxmemory-policy noeviction on it (CONFIG SET maxmemory-policy noeviction, and in its redis.conf)",
		name, policy, cfg["maxmemory"]), nil
}

// EvictionUnsafe reports whether Redis's eviction policy, as last read,
// could evict the store's keys; checkouts are refused meanwhile.
func (s *Store) EvictionUnsafe() bool { return s.ev.unsafe.Load() != nil }

// evictionRefusal is the error of a checkout while the policy is unsafe.
func (s *Store) evictionRefusal() error { return s.ev.refusal() }
