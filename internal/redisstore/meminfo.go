package redisstore

import (
	"context"
	"strconv"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"
)

// NodeMemory is what one Redis (a master, on a cluster) says of its memory
// in INFO memory: the bytes it uses and its maxmemory (0: no limit). Under
// noeviction a Redis at its maxmemory refuses checkouts, so an operator
// wants to know before it gets there.
type NodeMemory struct {
	Addr      string
	Used, Max int64
}

// Memory reads INFO memory from Redis, or from every master of a cluster,
// within callTimeout. INFO is allowed where CONFIG is often not (managed
// Redis), so this works where the eviction check cannot.
func (s *Store) Memory(ctx context.Context) ([]NodeMemory, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	if s.cluster == nil {
		c := s.rdb.(*redis.Client)
		m, err := nodeMemory(ctx, c)
		if err != nil {
			return nil, err
		}
		return []NodeMemory{m}, nil
	}
	var mu sync.Mutex
	var out []NodeMemory
	err := s.cluster.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
		m, err := nodeMemory(ctx, node)
		mu.Lock()
		defer mu.Unlock()
		if err == nil {
			out = append(out, m)
		}
		return err
	})
	return out, storeError(err)
}

// nodeMemory reads one node's INFO memory.
func nodeMemory(ctx context.Context, node *redis.Client) (NodeMemory, error) {
	m := NodeMemory{Addr: node.Options().Addr}
	info, err := node.Info(ctx, "memory").Result()
	if err != nil {
		return m, storeError(err)
	}
	for _, line := range strings.Split(info, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok {
			continue
		}
		switch k {
		case "used_memory":
			m.Used, _ = strconv.ParseInt(v, 10, 64)
		case "maxmemory":
			m.Max, _ = strconv.ParseInt(v, 10, 64)
		}
	}
	return m, nil
}
