package server

import (
	"time"

	"github.com/orderexpiry/orderexpiry/internal/gateway"
	"github.com/orderexpiry/orderexpiry/internal/order"
	"github.com/orderexpiry/orderexpiry/internal/watch"
)

// WatchConfig bounds the watches one replica serves (see watch.Options)
// and the REST watch's writes (see gateway.Options).
type WatchConfig struct {
	// MaxWatchers bounds the watch streams one replica serves at once.
	MaxWatchers int
	// MaxReplays bounds the watches with a cursor that replay at once.
	MaxReplays int
	// WriteTimeout bounds each write of a REST watch.
	WriteTimeout time.Duration
	// Buffer is how many events a watcher may fall behind the live fan-out
	// before it reads on from the log.
	Buffer int
}

func (c *WatchConfig) register(o *options) {
	o.Int(&c.MaxWatchers, "max-watchers", "MAX_WATCHERS", 10000, "watch streams one replica serves at once")
	o.Int(&c.MaxReplays, "max-replays", "MAX_REPLAYS", watch.DefaultMaxReplays, "watches with a cursor that replay the log at once; the others wait their turn")
	o.Duration(&c.WriteTimeout, "watch-write-timeout", "WATCH_WRITE_TIMEOUT", gateway.DefaultWatchWriteTimeout, "longest wait for one write of a REST watch; a client that has not taken what was sent for that long loses its watch and connection")
	o.Int(&c.Buffer, "watch-buffer", "WATCH_BUFFER", 1024, "events a watcher may fall behind the live fan-out; one further behind reads on from the log until it has caught up")
}

func (c *WatchConfig) parse(*options) error { return c.validate() }

// validate checks the bounds: each lets at least one watch through.
func (c *WatchConfig) validate() error {
	switch {
	case c.MaxWatchers < 1:
		return optionErrorf("max-watchers", "max watchers must be at least 1, got %d", c.MaxWatchers)
	case c.MaxReplays < 1:
		return optionErrorf("max-replays", "max replays must be at least 1, got %d", c.MaxReplays)
	case c.WriteTimeout <= 0:
		return optionErrorf("watch-write-timeout", "-watch-write-timeout must be more than zero, got %s", order.FormatDuration(c.WriteTimeout))
	case c.Buffer < 1:
		return optionErrorf("watch-buffer", "watch buffer must be at least 1, got %d", c.Buffer)
	}
	return nil
}
