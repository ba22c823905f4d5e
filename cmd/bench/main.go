// Command bench measures the order-expiry service beside its baselines in
// one run: `make bench`, or `go run ./cmd/bench -only lateness -quick`. It
// starts its own redis-server processes and the built server; see
// docs/benchmarks.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/orderexpiry/orderexpiry/internal/bench"
)

func main() {
	cfg := bench.Config{Out: os.Stdout, Log: os.Stderr}
	only := flag.String("only", "", "comma-separated stages to run: lateness (or lateness-a, lateness-b), throughput, memory, scale, fanout, cluster, groups, batch, list, bulk, capacity; empty: all")
	flag.BoolVar(&cfg.Quick, "quick", false, "small numbers, for a smoke test")
	flag.BoolVar(&cfg.Naive, "naive", true, "measure the naive recipe's lateness as the baseline (it waits up to 60 s per workload)")
	flag.StringVar(&cfg.ProfileDir, "pprof", "", "directory for 10 s CPU profiles of the service taken during each stage's load")
	flag.StringVar(&cfg.EventsDir, "events", "", "directory for each lateness workload's file of its orders' lateness, one order a line (order, expired_at - deadline, receive - deadline, in µs)")
	flag.IntVar(&cfg.GRPCConns, "grpc-conns", 1, "gRPC connections the concurrent callers share")
	flag.BoolVar(&cfg.Markdown, "markdown", false, "print the table as Markdown too")
	flag.IntVar(&cfg.Burst, "burst", 0, "orders due within one second in stage 1b (lateness-b); 0: 100,000, or 5,000 with -quick")
	flag.IntVar(&cfg.BurstPending, "burst-pending", -1, "orders pending (not due) beside the burst in stage 1b's second part; -1: 1,000,000, or 20,000 with -quick; 0: skip that part")
	flag.Parse()
	if *only != "" {
		cfg.Only = strings.Split(*only, ",")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := bench.Run(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}
