// Command server runs the order-expiry service: gRPC on GRPC_ADDR; REST,
// /healthz, /metrics and /openapi.json on HTTP_ADDR; on Redis when REDIS_URL
// is set and on the embedded in-memory store otherwise. It turns flags and
// environment variables into a server.Config, opens the listeners and runs
// the server until SIGINT or SIGTERM.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/orderexpiry/orderexpiry/internal/server"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "orderexpiry:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	cfg, err := parseConfig(args, getenv, stderr)
	if err != nil {
		return err
	}
	log := newLogger(cfg, stderr)
	// Listeners first, so that a taken port fails the start at once.
	lis, err := listen(cfg)
	if err != nil {
		return err
	}
	srv, err := server.New(cfg.Config, log)
	if err != nil {
		lis.Close()
		return err
	}
	return srv.Run(ctx, lis)
}

// listen opens the configured listeners; on an error it closes those it
// opened.
func listen(cfg config) (server.Listeners, error) {
	var lis server.Listeners
	// A method value would copy lis before the listeners are set.
	closeAll := func() { lis.Close() }
	var err error
	if lis.GRPC, err = net.Listen("tcp", cfg.grpcAddr); err != nil {
		return lis, fmt.Errorf("gRPC listener: %w", err)
	}
	if lis.HTTP, err = net.Listen("tcp", cfg.httpAddr); err != nil {
		closeAll()
		return lis, fmt.Errorf("HTTP listener: %w", err)
	}
	if cfg.debugAddr != "" {
		if lis.Debug, err = net.Listen("tcp", cfg.debugAddr); err != nil {
			closeAll()
			return lis, fmt.Errorf("debug listener: %w", err)
		}
	}
	return lis, nil
}

func newLogger(cfg config, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.logLevel}
	if cfg.logJSON {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
