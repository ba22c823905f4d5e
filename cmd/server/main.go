// Command server runs the order-expiry service: gRPC on GRPC_ADDR; REST,
// /healthz, /metrics and /openapi.json on HTTP_ADDR; on Redis when REDIS_URL
// is set and on the embedded in-memory store otherwise. It turns flags and
// environment variables into a server.Config (server.ParseFlags), sets up
// tracing from the OTEL_* variables (internal/tracing), opens the listeners
// and runs the server until SIGINT or SIGTERM.
//
// `orderexpiry healthcheck` (with the same flags and variables) asks the
// /healthz of the server they describe, on loopback, and exits 0 when it
// answers SERVING: the container image's health check, which has no shell
// or curl to do it.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/orderexpiry/orderexpiry/internal/server"
	"github.com/orderexpiry/orderexpiry/internal/tracing"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	run := run
	args := os.Args[1:]
	if len(args) > 0 && args[0] == "healthcheck" {
		run, args = healthcheck, args[1:]
	}
	if err := run(ctx, args, os.Getenv, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "orderexpiry:", err)
		os.Exit(1)
	}
}

// gcPercentOnRedis is the service's GOGC on Redis unless the environment
// sets one. There the service's live heap is small (the orders are in
// Redis), so that at Go's default of 100 the collector ran every few
// hundred calls: in benchmark 2, REST Checkout went from 0.90 to 0.98 of
// the Echo + SETNX recipe's rate to 0.98 to 1.04 (four alternating pairs
// of runs, docs/benchmarks-history.md), for about 5 MB of resident memory
// more (the stage reports the service's peak). On the memory store the
// heap holds every order, and Go's default stays.
const gcPercentOnRedis = 200

func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	f, err := server.ParseFlags(args, getenv, stderr)
	if err != nil {
		return err
	}
	log := server.NewLogger(f, stderr)
	tracingOn, stopTracing, err := tracing.Setup(ctx, getenv)
	if err != nil {
		return err
	}
	// The spans not exported yet are flushed, within a bound, once the
	// server has stopped.
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := stopTracing(ctx); err != nil {
			log.Warn("could not export the last spans", "err", err)
		}
	}()
	f.Tracing = tracingOn
	if getenv("GOGC") == "" && f.Store.OnRedis() {
		debug.SetGCPercent(gcPercentOnRedis)
		log.Debug("GOGC is not set: the service's own on Redis applies", "gogc", gcPercentOnRedis)
	}
	// Listeners first, so that a taken port fails the start at once.
	lis, err := server.Listen(f)
	if err != nil {
		return err
	}
	srv, err := server.New(f.Config, log)
	if err != nil {
		lis.Close()
		return err
	}
	return srv.Run(ctx, lis)
}
