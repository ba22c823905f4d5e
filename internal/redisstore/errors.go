package redisstore

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/orderexpiry/orderexpiry/internal/order"
)

// storeError translates a Redis client error into the domain's terms: faults
// of the connection, of a Redis that cannot serve now or refuses our
// credentials, or a call that ran out of time are Unavailable; a script
// refused because Redis is over its maxmemory is ResourceExhausted (see
// errFull); anything else (a script error, a wrong reply) stays an internal
// error.
func storeError(err error) error {
	if err == nil || errors.Is(err, context.Canceled) {
		return err
	}
	var rerr redis.Error
	if errors.As(err, &rerr) {
		msg := rerr.Error()
		if strings.HasPrefix(msg, "OOM") {
			return &order.Error{Kind: order.KindResourceExhausted, Reason: order.ReasonStoreFull, Msg: errFull, Err: err}
		}
		for _, p := range []string{"LOADING", "READONLY", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "BUSY", "NOREPLICAS", "WRONGPASS", "NOAUTH", "MOVED", "ASK"} {
			if strings.HasPrefix(msg, p) {
				return order.Unavailable(err)
			}
		}
		return fmt.Errorf("redis: %w", err)
	}
	return order.Unavailable(err)
}

// errFull is what a caller hears when Redis refuses a checkout because it
// is over its memory limit. Only the scripts that add orders are refused
// (see the shebangs in scripts.go): those that close and expire orders still run.
const errFull = "the order store is full: Redis has reached its memory limit (maxmemory), and no order can be checked out " +
	"until pending orders are completed, cancelled or expire, or Redis's maxmemory is raised; retry later"

// corrupt reports data read back from key that does not parse: it was not
// written by this store's scripts, so it is a fault of the store (an
// internal error, whose detail the service logs and never sends), never the
// caller's mistake, whatever kind of error the parser gave. It logs the
// key, and attrs, here, where the key is known.
func (s *Store) corrupt(key string, err error, attrs ...any) error {
	s.log.Error("the order store holds data that does not parse; it was not written by this service",
		append(append([]any{"key", key}, attrs...), "err", err)...)
	return &order.Error{
		Kind: order.KindInternal,
		Msg:  "the order store holds data that does not parse",
		Err:  fmt.Errorf("redis key %s: %w", key, err),
	}
}

// nodeError is storeError for a call made on one node of the cluster
// directly (or on the master under Sentinel): a redirection or a broken
// connection means the cluster's topology changed, which the client is asked
// to learn again.
func (s *Store) nodeError(err error) error {
	var rerr redis.Error
	if s.cluster != nil && (!errors.As(err, &rerr) || redis.HasErrorPrefix(err, "MOVED") || redis.HasErrorPrefix(err, "ASK")) {
		s.cluster.ReloadState(context.Background())
	}
	return storeError(err)
}
