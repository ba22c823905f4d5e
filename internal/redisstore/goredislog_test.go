package redisstore_test

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/orderexpiry/orderexpiry/internal/redisstore"
	"github.com/orderexpiry/orderexpiry/internal/redistest"
)

// TestGoRedisLogShared: go-redis has one logger per process; while two
// stores run in one, each store's log gets go-redis's messages, and a store
// that stopped gets no more of them.
func TestGoRedisLogShared(t *testing.T) {
	srv := redistest.Start(t)
	var logs [2]*redistest.LockedBuffer
	var stops [2]func()
	for i := range logs {
		logs[i] = &redistest.LockedBuffer{}
		log := slog.New(slog.NewTextHandler(logs[i], &slog.HandlerOptions{Level: slog.LevelDebug}))
		stops[i] = run(t, redisstore.New(srv.Client(t), redisstore.Options{Retention: time.Hour, Logger: log}))
	}
	// Run registers its logger when it starts, in its goroutine.
	n := 0
	waitUntil(t, 5*time.Second, "both stores' logs to have go-redis's message", func() bool {
		n++
		redisstore.LogAsGoRedis(t.Context(), fmt.Sprint("message ", n))
		want := fmt.Sprintf(`"go-redis: message %d"`, n)
		return strings.Contains(logs[0].String(), want) && strings.Contains(logs[1].String(), want)
	})
	stops[0]()
	redisstore.LogAsGoRedis(t.Context(), "after the stop")
	if strings.Contains(logs[0].String(), "after the stop") {
		t.Errorf("the stopped store's log still gets go-redis's messages:\n%s", logs[0])
	}
	if !strings.Contains(logs[1].String(), `"go-redis: after the stop"`) {
		t.Errorf("the running store's log lost go-redis's messages when the other stopped:\n%s", logs[1])
	}
}
