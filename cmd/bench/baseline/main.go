// Command baseline runs the benchmarks' baselines (internal/bench/baseline)
// on Redis as a process of its own, the way the benchmarks run the service:
// REDIS_URL names Redis, -grpc-addr and -http-addr the ports (":0" picks a
// free one), and it logs the same serving line as the service, with the
// addresses it listens on. `make bench` builds and starts it; it is not
// meant for anything else.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/redis/go-redis/v9"

	"github.com/orderexpiry/orderexpiry/internal/bench/baseline"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "baseline:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	grpcAddr := flag.String("grpc-addr", "127.0.0.1:0", "gRPC listen address")
	httpAddr := flag.String("http-addr", "127.0.0.1:0", "REST listen address")
	flag.Parse()
	opts, err := redis.ParseURL(os.Getenv("REDIS_URL"))
	if err != nil {
		return fmt.Errorf("REDIS_URL: %w", err)
	}
	rdb := redis.NewClient(opts)
	defer rdb.Close()
	if err := rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis: %w", err)
	}
	gl, err := net.Listen("tcp", *grpcAddr)
	if err != nil {
		return err
	}
	hl, err := net.Listen("tcp", *httpAddr)
	if err != nil {
		gl.Close()
		return err
	}
	slog.New(slog.NewTextHandler(os.Stderr, nil)).Info("serving", "grpc", gl.Addr().String(), "http", hl.Addr().String())
	return baseline.Serve(ctx, rdb, gl, hl)
}
