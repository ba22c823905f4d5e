// Command server runs the order-expiry service: gRPC on GRPC_ADDR, REST and
// /healthz on HTTP_ADDR, on Redis when REDIS_URL is set and on the embedded
// in-memory store otherwise.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/orderexpiry/orderexpiry/internal/gateway"
	pb "github.com/orderexpiry/orderexpiry/internal/gen/orderexpiry/v1"
	"github.com/orderexpiry/orderexpiry/internal/memstore"
	"github.com/orderexpiry/orderexpiry/internal/redisstore"
	"github.com/orderexpiry/orderexpiry/internal/rpc"
	"github.com/orderexpiry/orderexpiry/internal/watch"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "orderexpiry:", err)
		os.Exit(1)
	}
}

// store is what the server runs: the RPCs' store, the hub's log, and the
// background work that expires orders.
type store interface {
	rpc.Store
	watch.Log
	Ping(ctx context.Context) error
	Run(ctx context.Context) error
}

func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	cfg, err := parseConfig(args, getenv, stderr)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: cfg.logLevel}))

	var st store
	storeName := "memory"
	storeAttrs := []any{}
	if cfg.redisURL == "" {
		log.Info("REDIS_URL is not set: using the embedded in-memory store; orders and events are lost when the process stops")
		st = memstore.New(cfg.retention)
	} else {
		redisstore.SetLogger(log)
		rdb, err := redisstore.NewClient(cfg.redisURL)
		if err != nil {
			return err
		}
		defer rdb.Close()
		st = redisstore.New(rdb, redisstore.Options{Retention: cfg.retention, Logger: log})
		storeName = "redis"
		// The address and db only: the URL may hold a password.
		storeAttrs = append(storeAttrs, "redis_addr", rdb.Options().Addr, "redis_db", rdb.Options().DB)
	}

	// Listeners first, so that a taken port fails the start at once.
	grpcLis, err := net.Listen("tcp", cfg.grpcAddr)
	if err != nil {
		return fmt.Errorf("gRPC listener: %w", err)
	}
	defer grpcLis.Close()
	httpLis, err := net.Listen("tcp", cfg.httpAddr)
	if err != nil {
		return fmt.Errorf("HTTP listener: %w", err)
	}
	defer httpLis.Close()

	hub := watch.NewHub(st, cfg.watchBuffer, log)
	grpcServer := grpc.NewServer()
	pb.RegisterOrderServiceServer(grpcServer, rpc.New(st, hub, cfg.limits, log))
	healthServer := health.NewServer()
	// NOT_SERVING until the first ping of the store says otherwise.
	healthServer.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	healthServer.SetServingStatus(pb.OrderService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_NOT_SERVING)
	healthpb.RegisterHealthServer(grpcServer, healthServer)
	reflection.Register(grpcServer)

	conn, err := grpc.NewClient(dialAddr(grpcLis.Addr()), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("gateway connection: %w", err)
	}
	defer conn.Close()
	var serving atomic.Bool
	healthy := func(context.Context) error {
		if !serving.Load() {
			return errors.New("the order store is unreachable")
		}
		return nil
	}
	handler, err := gateway.New(ctx, conn, healthy)
	if err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	httpServer := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	servers := []*http.Server{httpServer}
	listeners := []net.Listener{httpLis}
	if cfg.debugAddr != "" {
		debugLis, err := net.Listen("tcp", cfg.debugAddr)
		if err != nil {
			return fmt.Errorf("debug listener: %w", err)
		}
		defer debugLis.Close()
		servers = append(servers, &http.Server{Handler: debugHandler(), ReadHeaderTimeout: 10 * time.Second})
		listeners = append(listeners, debugLis)
		log.Info("serving profiles", "debug", debugLis.Addr().String())
	}

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return st.Run(gctx) })
	g.Go(func() error { return hub.Run(gctx) })
	g.Go(func() error {
		monitorHealth(gctx, st, healthServer, &serving, log)
		return nil
	})
	g.Go(func() error {
		if err := grpcServer.Serve(grpcLis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return fmt.Errorf("gRPC server: %w", err)
		}
		return nil
	})
	for i, srv := range servers {
		g.Go(func() error {
			if err := srv.Serve(listeners[i]); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("HTTP server: %w", err)
			}
			return nil
		})
	}
	g.Go(func() error {
		<-gctx.Done()
		log.Info("stopping", "timeout", cfg.shutdownTimeout)
		shutdown(grpcServer, servers, healthServer, cfg.shutdownTimeout, log)
		return nil
	})
	log.Info("serving", append([]any{"grpc", grpcLis.Addr().String(), "http", httpLis.Addr().String(), "store", storeName}, storeAttrs...)...)
	err = g.Wait()
	log.Info("stopped")
	return err
}

// shutdown stops both servers within the timeout: in-flight calls finish and
// watch streams end with a cursor to resume from (the hub closes them when
// the context ends); whatever is still open at the bound is cut.
func shutdown(grpcServer *grpc.Server, httpServers []*http.Server, hs *health.Server, timeout time.Duration, log *slog.Logger) {
	hs.Shutdown()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, srv := range httpServers {
		wg.Go(func() {
			if err := srv.Shutdown(ctx); err != nil {
				log.Warn("HTTP server did not stop in time; closing its connections", "err", err)
				_ = srv.Close()
			}
		})
	}
	stopped := make(chan struct{})
	go func() {
		grpcServer.GracefulStop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-ctx.Done():
		log.Warn("gRPC server did not stop in time; closing its connections")
		grpcServer.Stop()
	}
	wg.Wait()
}

// debugHandler serves the runtime profiles of net/http/pprof.
func debugHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// monitorHealth pings the store every second and reports the result through
// gRPC health and /healthz: NOT_SERVING while the store is unreachable.
func monitorHealth(ctx context.Context, st store, hs *health.Server, serving *atomic.Bool, log *slog.Logger) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	first := true
	for {
		pctx, cancel := context.WithTimeout(ctx, 900*time.Millisecond)
		err := st.Ping(pctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		ok := err == nil
		if first || ok != serving.Load() {
			status := healthpb.HealthCheckResponse_SERVING
			if !ok {
				status = healthpb.HealthCheckResponse_NOT_SERVING
				log.Warn("the order store is unreachable: NOT_SERVING", "err", err)
			} else if !first {
				log.Info("the order store is reachable again: SERVING")
			}
			serving.Store(ok)
			hs.SetServingStatus("", status)
			hs.SetServingStatus(pb.OrderService_ServiceDesc.ServiceName, status)
			first = false
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// dialAddr is the address the gateway dials to reach the gRPC listener: its
// own address, with a wildcard host replaced by loopback.
func dialAddr(a net.Addr) string {
	tcp, ok := a.(*net.TCPAddr)
	if !ok {
		return a.String()
	}
	ip := tcp.IP
	if ip == nil || ip.IsUnspecified() {
		ip = net.IPv4(127, 0, 0, 1)
	}
	return net.JoinHostPort(ip.String(), fmt.Sprint(tcp.Port))
}
