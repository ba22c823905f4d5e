package redisstore

import (
	"context"
	"strconv"
	"strings"

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
	return eachNode(ctx, s, nodeMemory)
}

// nodeMemory reads one node's INFO memory.
func nodeMemory(ctx context.Context, node *redis.Client, _ string) (NodeMemory, error) {
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
