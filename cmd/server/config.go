package main

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/orderexpiry/orderexpiry/internal/order"
)

// config is everything the server can be told, by flag or by environment
// variable; a flag wins over its variable.
type config struct {
	grpcAddr        string
	httpAddr        string
	debugAddr       string
	redisURL        string
	limits          order.Limits
	retention       time.Duration
	watchBuffer     int
	shutdownTimeout time.Duration
	logLevel        slog.Level
}

func parseConfig(args []string, getenv func(string) string, stderr io.Writer) (config, error) {
	c := config{limits: order.DefaultLimits}
	fs := flag.NewFlagSet("orderexpiry", flag.ContinueOnError)
	fs.SetOutput(stderr)
	env := func(name, def string) string {
		if v := getenv(name); v != "" {
			return v
		}
		return def
	}
	var errs []error
	dur := func(p *time.Duration, name, envName, def, usage string) {
		v := env(envName, def)
		d, err := time.ParseDuration(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s=%q: not a duration (like 30s, 15m, 24h)", envName, v))
		}
		*p = d
		fs.DurationVar(p, name, d, usage+" ($"+envName+")")
	}
	fs.StringVar(&c.grpcAddr, "grpc-addr", env("GRPC_ADDR", ":9090"), "gRPC listen address ($GRPC_ADDR)")
	fs.StringVar(&c.httpAddr, "http-addr", env("HTTP_ADDR", ":8080"), "REST and /healthz listen address ($HTTP_ADDR)")
	fs.StringVar(&c.debugAddr, "debug-addr", env("DEBUG_ADDR", ""), "listen address for /debug/pprof/ (profiles, goroutines, heap); empty: off. Keep it private ($DEBUG_ADDR)")
	fs.StringVar(&c.redisURL, "redis-url", env("REDIS_URL", ""), "redis:// or rediss:// URL, with password and db; empty: the embedded in-memory store ($REDIS_URL)")
	dur(&c.limits.DefaultTTL, "default-ttl", "DEFAULT_TTL", "15m", "ttl of a checkout that gives none")
	dur(&c.limits.MaxTTL, "max-ttl", "MAX_TTL", "168h", "longest ttl a checkout may ask for")
	dur(&c.retention, "retention", "RETENTION", "24h", "how long closed orders and expiration events are kept")
	dur(&c.shutdownTimeout, "shutdown-timeout", "SHUTDOWN_TIMEOUT", "10s", "bound on the graceful stop")
	fs.IntVar(&c.watchBuffer, "watch-buffer", 1024, "events a watcher may fall behind before it is closed with a cursor to resume from")
	level := fs.String("log-level", env("LOG_LEVEL", "info"), "debug, info, warn or error ($LOG_LEVEL)")
	if len(errs) > 0 {
		return c, errs[0]
	}
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if err := c.logLevel.UnmarshalText([]byte(*level)); err != nil {
		return c, fmt.Errorf("log level %q: want debug, info, warn or error", *level)
	}
	if err := c.limits.Validate(); err != nil {
		return c, err
	}
	if c.retention < time.Second {
		return c, fmt.Errorf("retention %s is too short; it must be at least 1s", c.retention)
	}
	if c.watchBuffer < 1 {
		return c, fmt.Errorf("watch buffer must be at least 1, got %d", c.watchBuffer)
	}
	return c, nil
}
