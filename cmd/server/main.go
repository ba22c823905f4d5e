// Command server runs the order-expiry service: gRPC on GRPC_ADDR; REST,
// /healthz, /metrics and /openapi.json on HTTP_ADDR; on Redis when REDIS_URL
// is set and on the embedded in-memory store otherwise.
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
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/test/bufconn"

	"github.com/orderexpiry/orderexpiry/internal/auth"
	"github.com/orderexpiry/orderexpiry/internal/gateway"
	"github.com/orderexpiry/orderexpiry/internal/gen/openapi"
	pb "github.com/orderexpiry/orderexpiry/internal/gen/orderexpiry/v1"
	"github.com/orderexpiry/orderexpiry/internal/memstore"
	"github.com/orderexpiry/orderexpiry/internal/metrics"
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
	// Subscribed reports whether the store hears Redis's expired-key
	// events (always, for the memory store), for the metrics.
	Subscribed() bool
}

func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	cfg, err := parseConfig(args, getenv, stderr)
	if err != nil {
		return err
	}
	log := newLogger(cfg, stderr)

	// The metrics read the hub, which reads the store, which reports its
	// expirations to the metrics: m is set before anything runs.
	var m *metrics.Metrics
	st, storeAttrs, closeStore, err := openStore(cfg, log, func(n, caughtUp int) { m.Expired(n, caughtUp) })
	if err != nil {
		return err
	}
	defer closeStore()

	hub := watch.NewHub(st, cfg.watchBuffer, log)
	hub.MaxWatchers = cfg.maxWatchers
	m = metrics.New(hub.Watchers, st.Subscribed)
	hub.OnPublish = m.Delivered

	serverTLS, err := loadServerTLS(cfg)
	if err != nil {
		return err
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

	svc := rpc.New(st, hub, cfg.limits, log)
	svc.Observer = m
	svc.UseCodec()
	healthServer := health.NewServer()
	// NOT_SERVING until the first ping of the store says otherwise.
	healthServer.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	healthServer.SetServingStatus(pb.OrderService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_NOT_SERVING)

	tokens := authenticator(cfg, log)
	newGRPC := func(extra ...grpc.ServerOption) *grpc.Server {
		unary := []grpc.UnaryServerInterceptor{m.GRPC.UnaryServerInterceptor()}
		stream := []grpc.StreamServerInterceptor{m.GRPC.StreamServerInterceptor()}
		// The line per RPC is at debug level; below it the interceptor
		// would still gather its fields on every call, for nothing.
		if log.Enabled(ctx, slog.LevelDebug) {
			unary = append(unary, logging.UnaryServerInterceptor(rpcLogger(log), rpcLogOptions...))
			stream = append(stream, logging.StreamServerInterceptor(rpcLogger(log), rpcLogOptions...))
		}
		if tokens != nil {
			unary = append(unary, tokens.Unary)
			stream = append(stream, tokens.Stream)
		}
		s := grpc.NewServer(append([]grpc.ServerOption{
			grpc.ChainUnaryInterceptor(unary...),
			grpc.ChainStreamInterceptor(stream...),
			grpc.MaxRecvMsgSize(cfg.maxBodyBytes),
			grpc.ForceServerCodecV2(rpc.Codec),
		}, extra...)...)
		pb.RegisterOrderServiceServer(s, svc)
		healthpb.RegisterHealthServer(s, healthServer)
		reflection.Register(s)
		return s
	}
	var grpcOpts []grpc.ServerOption
	if serverTLS != nil {
		grpcOpts = append(grpcOpts, grpc.Creds(credentials.NewTLS(serverTLS.Clone())))
	}
	grpcServer := newGRPC(grpcOpts...)
	m.GRPC.InitializeMetrics(grpcServer)
	// The gateway reaches the service through an in-memory listener of its
	// own: TLS and client certificates are checked on the HTTP port, and the
	// gRPC port stays closed to anyone without them.
	internalLis := bufconn.Listen(1 << 20)
	internalServer := newGRPC()
	conn, err := grpc.NewClient("passthrough:///orderexpiry-internal",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return internalLis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("gateway connection: %w", err)
	}
	defer conn.Close()

	var serving atomic.Bool
	gw, err := gateway.New(ctx, conn, gateway.Options{
		Health: func(context.Context) error {
			if !serving.Load() {
				return errors.New("the order store is unreachable")
			}
			return nil
		},
		Metrics:      m.Handler(),
		OpenAPI:      openapi.OrderService,
		Authorize:    tokens.HTTP(),
		Open:         cfg.authOpen,
		MaxBodyBytes: int64(cfg.maxBodyBytes),
	})
	if err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	// net/http's own errors (refused TLS handshakes, …) go to the same log.
	errorLog := slog.NewLogLogger(log.Handler(), slog.LevelWarn)
	httpServer := &http.Server{Handler: gw, ReadHeaderTimeout: 10 * time.Second, TLSConfig: serverTLS, ErrorLog: errorLog}
	servers := []*http.Server{httpServer}
	listeners := []net.Listener{httpLis}
	if cfg.debugAddr != "" {
		debugLis, err := net.Listen("tcp", cfg.debugAddr)
		if err != nil {
			return fmt.Errorf("debug listener: %w", err)
		}
		defer debugLis.Close()
		servers = append(servers, &http.Server{Handler: debugHandler(), ReadHeaderTimeout: 10 * time.Second, ErrorLog: errorLog})
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
	for lis, srv := range map[net.Listener]*grpc.Server{grpcLis: grpcServer, internalLis: internalServer} {
		g.Go(func() error {
			if err := srv.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
				return fmt.Errorf("gRPC server: %w", err)
			}
			return nil
		})
	}
	for i, srv := range servers {
		g.Go(func() error {
			var err error
			if srv.TLSConfig != nil {
				err = srv.ServeTLS(listeners[i], "", "")
			} else {
				err = srv.Serve(listeners[i])
			}
			if err != nil && !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("HTTP server: %w", err)
			}
			return nil
		})
	}
	g.Go(func() error {
		<-gctx.Done()
		log.Info("stopping", "timeout", cfg.shutdownTimeout)
		shutdown([]*grpc.Server{grpcServer, internalServer}, servers, healthServer, cfg.shutdownTimeout, log)
		return nil
	})
	log.Info("serving", append([]any{"grpc", grpcLis.Addr().String(), "http", httpLis.Addr().String(),
		"tls", serverTLS != nil, "auth", tokens != nil}, storeAttrs...)...)
	err = g.Wait()
	log.Info("stopped")
	return err
}

// openStore opens a Redis Cluster or one Redis when one is named, and the
// memory store otherwise.
func openStore(cfg config, log *slog.Logger, onExpire func(n, caughtUp int)) (store, []any, func(), error) {
	if cfg.redisURL == "" && cfg.redisCluster == "" {
		log.Info("REDIS_URL is not set: using the embedded in-memory store; orders and events are lost when the process stops")
		st := memstore.New(cfg.retention)
		st.OnExpire = onExpire
		return st, []any{"store", "memory"}, func() {}, nil
	}
	redisstore.SetLogger(log)
	files := redisstore.TLSFiles{CA: cfg.redisCA, Cert: cfg.redisCert, Key: cfg.redisKey}
	opts := redisstore.Options{Retention: cfg.retention, Logger: log, OnExpire: onExpire, Partitions: cfg.partitions}
	if cfg.redisCluster != "" {
		rdb, err := redisstore.NewClusterClient(cfg.redisCluster, files)
		if err != nil {
			return nil, nil, nil, err
		}
		if opts.Partitions == 0 {
			opts.Partitions = defaultClusterPartitions
		}
		// The seeds only: a URL may hold a password.
		attrs := []any{"store", "redis-cluster", "redis_seeds", strings.Join(rdb.Options().Addrs, ","), "redis_tls", rdb.Options().TLSConfig != nil}
		return redisstore.New(rdb, opts), attrs, func() { _ = rdb.Close() }, nil
	}
	rdb, err := redisstore.NewClient(cfg.redisURL, files)
	if err != nil {
		return nil, nil, nil, err
	}
	// The address and db only: the URL may hold a password.
	attrs := []any{"store", "redis", "redis_addr", rdb.Options().Addr, "redis_db", rdb.Options().DB, "redis_tls", rdb.Options().TLSConfig != nil}
	return redisstore.New(rdb, opts), attrs, func() { _ = rdb.Close() }, nil
}

// authenticator returns the token checker, or nil when no token is set.
func authenticator(cfg config, log *slog.Logger) *auth.Tokens {
	if len(cfg.tokens) == 0 {
		log.Warn("no bearer tokens are set (AUTH_TOKENS, -auth-tokens-file): every call is let in")
		return nil
	}
	var open []string
	for name, prefix := range auth.OpenServices {
		if cfg.authOpen[name] {
			open = append(open, prefix)
		}
	}
	return auth.New(cfg.tokens, open)
}

func newLogger(cfg config, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.logLevel}
	if cfg.logJSON {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// rpcLogOptions log one line per finished RPC, at debug level whatever its
// code: the errors that matter are logged where they happen.
var rpcLogOptions = []logging.Option{
	logging.WithLogOnEvents(logging.FinishCall),
	logging.WithLevels(func(codes.Code) logging.Level { return logging.LevelDebug }),
}

func rpcLogger(l *slog.Logger) logging.Logger {
	return logging.LoggerFunc(func(ctx context.Context, lvl logging.Level, msg string, fields ...any) {
		l.Log(ctx, slog.Level(lvl), msg, fields...)
	})
}

// shutdown stops the servers within the timeout: in-flight calls finish and
// watch streams end with a cursor to resume from (the hub closes them when
// the context ends); whatever is still open at the bound is cut.
func shutdown(grpcServers []*grpc.Server, httpServers []*http.Server, hs *health.Server, timeout time.Duration, log *slog.Logger) {
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
	for _, srv := range grpcServers {
		wg.Go(func() {
			stopped := make(chan struct{})
			go func() {
				srv.GracefulStop()
				close(stopped)
			}()
			select {
			case <-stopped:
			case <-ctx.Done():
				log.Warn("gRPC server did not stop in time; closing its connections")
				srv.Stop()
			}
		})
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
