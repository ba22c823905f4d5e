package redisstore_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/orderexpiry/orderexpiry/internal/order"
	"github.com/orderexpiry/orderexpiry/internal/redisstore"
	"github.com/orderexpiry/orderexpiry/internal/redistest"
)

// TestCorruptDataIsInternal stores data that the store's scripts never
// write in a real Redis, and reads it back through the store: each read
// must fail as an internal error (a fault of the store, which the service
// logs and never sends), not as a mistake of the caller, and the log must
// name the key that holds the data.
func TestCorruptDataIsInternal(t *testing.T) {
	tests := []struct {
		name string
		// corrupt writes the bad data, through the store or directly.
		corrupt func(t *testing.T, s *redisstore.Store, rdb *redis.Client)
		// read reads it back through the store.
		read func(ctx context.Context, s *redisstore.Store) error
		// key is the key the log must name, with attrs after it.
		key string
	}{
		{
			name: "tombstone that is no record",
			corrupt: func(t *testing.T, _ *redisstore.Store, rdb *redis.Client) {
				must(t, rdb.Set(t.Context(), "oe:{0}:closed:bad", "expired soon, maybe", time.Hour).Err())
			},
			read: func(ctx context.Context, s *redisstore.Store) error { _, err := s.Get(ctx, "bad"); return err },
			key:  "key=oe:{0}:closed:bad",
		},
		{
			name: "expired order's tombstone that is no record",
			corrupt: func(t *testing.T, _ *redisstore.Store, rdb *redis.Client) {
				must(t, rdb.HSet(t.Context(), "oe:{0}:expired", "bad", "expired 1 2").Err())
			},
			read: func(ctx context.Context, s *redisstore.Store) error { _, err := s.Get(ctx, "bad"); return err },
			key:  "oe:{0}:expired field bad",
		},
		{
			name: "tombstone with a time that is no number",
			corrupt: func(t *testing.T, _ *redisstore.Store, rdb *redis.Client) {
				must(t, rdb.Set(t.Context(), "oe:{0}:closed:bad", "completed 1 2 yesterday ", time.Hour).Err())
			},
			read: func(ctx context.Context, s *redisstore.Store) error { _, err := s.Complete(ctx, "bad"); return err },
			key:  "key=oe:{0}:closed:bad",
		},
		{
			name: "pending order whose metadata is no JSON",
			corrupt: func(t *testing.T, s *redisstore.Store, rdb *redis.Client) {
				if _, _, err := s.Checkout(t.Context(), "bad", time.Hour, nil); err != nil {
					t.Fatal(err)
				}
				must(t, rdb.HSet(t.Context(), "oe:{0}:pending", "bad", "1 {not json").Err())
			},
			read: func(ctx context.Context, s *redisstore.Store) error { _, err := s.Get(ctx, "bad"); return err },
			key:  "key=oe:{0}:pending field=bad",
		},
		{
			name: "event with a deadline that is no number",
			corrupt: func(t *testing.T, _ *redisstore.Store, rdb *redis.Client) {
				must(t, rdb.XAdd(t.Context(), &redis.XAddArgs{Stream: "oe:{0}:events", ID: "5-1",
					Values: []string{"id", "bad", "c", "1", "d", "soon", "x", "3", "m", ""}}).Err())
			},
			read: func(ctx context.Context, s *redisstore.Store) error {
				_, err := s.Events(ctx, 0, order.Offset{}, 10, 0)
				return err
			},
			key: "key=oe:{0}:events entry=5-1",
		},
		{
			name: "event whose metadata is no JSON, read waiting",
			corrupt: func(t *testing.T, _ *redisstore.Store, rdb *redis.Client) {
				must(t, rdb.XAdd(t.Context(), &redis.XAddArgs{Stream: "oe:{0}:events", ID: "5-2",
					Values: []string{"id", "bad", "c", "1", "d", "2", "x", "3", "m", "[1,2"}}).Err())
			},
			read: func(ctx context.Context, s *redisstore.Store) error {
				_, err := s.Events(ctx, 0, order.Offset{}, 10, time.Second)
				return err
			},
			key: "key=oe:{0}:events entry=5-2",
		},
		{
			name: "number of partitions that is no number",
			corrupt: func(t *testing.T, _ *redisstore.Store, rdb *redis.Client) {
				must(t, rdb.Set(t.Context(), "oe:partitions", "many", 0).Err())
			},
			read: func(ctx context.Context, s *redisstore.Store) error { _, err := s.Partitions(ctx); return err },
			key:  "key=oe:partitions",
		},
		{
			name: "number of partitions out of bounds",
			corrupt: func(t *testing.T, _ *redisstore.Store, rdb *redis.Client) {
				must(t, rdb.Set(t.Context(), "oe:partitions", "0", 0).Err())
			},
			read: func(ctx context.Context, s *redisstore.Store) error {
				_, _, err := s.Checkout(ctx, "o", time.Minute, nil)
				return err
			},
			key: "key=oe:partitions",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := redistest.Start(t)
			logs := &redistest.LockedBuffer{}
			// Not run: no sweeper may expire or trim anything meanwhile.
			s := redisstore.New(srv.Client(t), redisstore.Options{Retention: time.Hour, Logger: slog.New(slog.NewTextHandler(logs, nil))})
			tt.corrupt(t, s, srv.Client(t))

			err := tt.read(t.Context(), s)
			if err == nil {
				t.Fatal("the read of corrupt data succeeded")
			}
			if k := order.KindOf(err); k != order.KindInternal {
				t.Errorf("error %q has kind %d, want KindInternal (%d): the caller did nothing wrong", err, k, order.KindInternal)
			}
			if !strings.Contains(logs.String(), "level=ERROR") || !strings.Contains(logs.String(), tt.key) {
				t.Errorf("the log does not name %s in an error:\n%s", tt.key, logs)
			}
		})
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
