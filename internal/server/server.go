// Package server assembles the service from its parts: the order store, the
// hub that fans out its expiration log, the gRPC service with health and
// reflection, the REST gateway, the HTTP and debug servers and the health
// monitor. New builds them from a Config; Run serves them on listeners the
// caller opened until its context ends, then stops them gracefully.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"

	"github.com/orderexpiry/orderexpiry/internal/auth"
	"github.com/orderexpiry/orderexpiry/internal/gateway"
	"github.com/orderexpiry/orderexpiry/internal/gen/openapi"
	"github.com/orderexpiry/orderexpiry/internal/inproc"
	"github.com/orderexpiry/orderexpiry/internal/metrics"
	"github.com/orderexpiry/orderexpiry/internal/order"
	"github.com/orderexpiry/orderexpiry/internal/push"
	"github.com/orderexpiry/orderexpiry/internal/rpc"
	"github.com/orderexpiry/orderexpiry/internal/ui"
	"github.com/orderexpiry/orderexpiry/internal/watch"
	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// Listeners are where the server serves. GRPC and HTTP are required; Debug,
// when set, serves /debug/pprof/.
type Listeners struct {
	GRPC, HTTP, Debug net.Listener
}

// Close closes every listener that is set.
func (l Listeners) Close() {
	for _, lis := range []net.Listener{l.GRPC, l.HTTP, l.Debug} {
		if lis != nil {
			_ = lis.Close()
		}
	}
}

// Server is the assembled service. Run it once.
type Server struct {
	cfg Config
	log *slog.Logger

	store      listingStore
	storeAttrs []any
	closeStore func()
	hub        *watch.Hub
	svc        *rpc.Service
	health     *health.Server
	// serving mirrors the health status for /healthz; notServing is why
	// not, as a caller may read it (the store error's public message).
	serving    atomic.Bool
	notServing atomic.Pointer[string]

	tls    *tls.Config
	tokens *auth.Tokens
	grpc   *grpc.Server
	http   *http.Server
	// pusher delivers the push groups' events; nil when push is off.
	pusher *push.Deliverer
	// servingAgain hears each time the store becomes able to serve (see
	// keepGroups).
	servingAgain chan struct{}
}

// New builds the server: it opens the store's client (without calling it
// yet) and wires every part. Run releases what New opened.
func New(cfg Config, log *slog.Logger) (*Server, error) {
	s := &Server{cfg: cfg, log: log}
	serverTLS, err := loadServerTLS(cfg.TLS)
	if err != nil {
		return nil, err
	}
	s.tls = serverTLS

	m := metrics.New()
	st, err := openStore(cfg, log, m.Expired)
	if err != nil {
		return nil, err
	}
	s.store, s.storeAttrs, s.closeStore = st.store, st.attrs, st.close
	// GetStats reports the lateness of the last minutes, as the metrics'
	// histogram does of all time.
	lateness := rpc.NewLateness(5 * time.Minute)
	s.hub = watch.NewHub(s.store, watch.Options{
		Buffer:      cfg.Watch.Buffer,
		MaxWatchers: cfg.Watch.MaxWatchers,
		MaxReplays:  cfg.Watch.MaxReplays,
		OnPublish: func(ev order.Event, at time.Time) {
			m.Published(ev, at)
			lateness.Observe(ev, at)
		},
		OnCatchUp: m.WatchCatchUp,
		OnRepeat:  m.RepeatSkipped,
		OnRewind:  m.LogRewound,
		Logger:    log,
	})
	m.Watch(metrics.Sources{Watchers: s.hub.Watchers, Subscribed: st.subscribed, EvictionUnsafe: st.evictionUnsafe, Groups: s.groupStates,
		SlotRetries: st.slotRetries, Serving: s.serving.Load, RedisMemory: st.memory,
		Durability: st.durability, DurabilityUnsafe: st.durabilityUnsafe, Unconfirmed: st.unconfirmed})

	s.health = health.NewServer()
	// NOT_SERVING until the first ping of the store says otherwise.
	s.setHealth(healthpb.HealthCheckResponse_NOT_SERVING)
	s.tokens = authenticator(cfg, log)

	svc := rpc.New(s.store, s.hub, rpc.Options{
		Limits:   cfg.Limits.Limits,
		Observer: m,
		Logger:   log,
		Groups:   cfg.Groups.GroupLimits,
		Lateness: lateness,
		Push:     cfg.Push.Policy,
		Settings: errorSettings,
	})
	s.svc = svc
	s.servingAgain = make(chan struct{}, 1)
	if err := s.checkGroupsFile(); err != nil {
		st.close()
		return nil, err
	}
	if len(cfg.Push.AllowHosts) > 0 {
		s.pusher = push.New(push.Options{Store: s.store, Policy: cfg.Push.Policy, Encode: rpc.EventJSON, Appended: s.hub.Appended, DropRepeats: s.hub.DropRepeats, Observer: m, Logger: log,
			StopTimeout: cfg.ShutdownTimeout})
	}
	// The gRPC port's clients are bounded in what they may send and hold;
	// the gateway's calls, served in process, were bounded by the HTTP
	// server already.
	external := []grpc.ServerOption{
		grpc.MaxHeaderListSize(uint32(cfg.Conns.MaxHeaderBytes)),
		grpc.MaxConcurrentStreams(uint32(cfg.Conns.MaxStreams)),
		grpc.ConnectionTimeout(cfg.Conns.ReadTimeout),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			MaxConnectionIdle: cfg.Conns.IdleTimeout,
			// Pings a connection silent this long, and closes it when the
			// ping goes unanswered: a client gone without a word (its host
			// died, a NAT forgot it) does not hold a watch open forever.
			Time:    time.Minute,
			Timeout: 20 * time.Second,
		}),
		// Clients may ping as often as every 10 s, even with no call open,
		// so that a watch behind a proxy can keep its connection up; more
		// often, the server closes the connection (too_many_pings).
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
	}
	if serverTLS != nil {
		external = append(external, grpc.Creds(credentials.NewTLS(serverTLS.Clone())))
	}
	s.grpc = s.newGRPC(svc, m, external...)
	m.GRPC.InitializeMetrics(s.grpc)
	// The gateway's calls are served in process, through the same
	// interceptors as the gRPC port's (see inproc): no connection, no
	// encoding. TLS and client certificates are checked on the HTTP port.
	unary, stream := s.interceptors(m, gatewayPeer{})
	local := inproc.New(inproc.Options{Interceptors: append(unary, svc.UnaryInterceptors()...), StreamInterceptors: append(stream, svc.StreamInterceptors()...),
		MaxRecvMsgSize: s.cfg.Limits.MaxRequestBytes, TracerProvider: s.tracerProvider()})
	pb.RegisterOrderServiceServer(local, svc)
	gw, err := gateway.New(context.Background(), local, gateway.Options{
		Health: func(context.Context) error {
			if !s.serving.Load() {
				if r := s.notServing.Load(); r != nil {
					return errors.New(*r)
				}
				return errors.New("the order store is unreachable")
			}
			return nil
		},
		HealthDetail:      healthDetail(st.durability),
		Metrics:           m.Handler(),
		OpenAPI:           openapi.OrderService,
		Authorize:         s.tokens.HTTP(),
		Open:              cfg.Auth.Open,
		MaxBodyBytes:      int64(cfg.Limits.MaxRequestBytes),
		WatchWriteTimeout: cfg.Watch.WriteTimeout,
		UI:                ui.Handler(),
		CrossSite:         gateway.CrossSite{Check: s.tokens == nil, AllowOrigins: cfg.Auth.AllowOrigins, AllowHosts: cfg.Auth.AllowHosts},
	})
	if err != nil {
		s.closeStore()
		return nil, fmt.Errorf("gateway: %w", err)
	}
	s.http = s.newHTTP(withBodyDeadline(s.tracedHTTP(gw), cfg.Conns.ReadTimeout))
	s.http.TLSConfig = serverTLS
	s.http.IdleTimeout = cfg.Conns.IdleTimeout
	return s, nil
}

// groupStates reads every consumer group's state for the metrics, within a
// bound; a group whose state cannot be read is left out of that scrape,
// and ok is false when the list of groups could not be read.
func (s *Server) groupStates() ([]string, []metrics.GroupState, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	groups, err := s.store.Groups(ctx)
	if err != nil {
		return nil, nil, false
	}
	ids := make([]string, len(groups))
	out := make([]metrics.GroupState, 0, len(groups))
	for i, g := range groups {
		ids[i] = g.ID
		if _, st, err := s.store.Group(ctx, g.ID); err == nil {
			gs := metrics.GroupState{ID: g.ID, Backlog: st.Backlog, InFlight: st.InFlight, DeadLetters: st.DeadLetters}
			if !st.OldestUnacked.IsZero() {
				gs.OldestUnacked = max(time.Since(st.OldestUnacked), 0)
			}
			out = append(out, gs)
		}
	}
	return ids, out, true
}

// newGRPC returns a gRPC server of the service, health and reflection, with
// the metrics, the debug log and the token check on every call.
func (s *Server) newGRPC(svc *rpc.Service, m *metrics.Metrics, extra ...grpc.ServerOption) *grpc.Server {
	unary, stream := s.interceptors(m, nil)
	opts := append([]grpc.ServerOption{
		grpc.ChainUnaryInterceptor(unary...),
		grpc.ChainStreamInterceptor(stream...),
		grpc.MaxRecvMsgSize(s.cfg.Limits.MaxRequestBytes),
	}, s.tracedServer()...)
	g := rpc.NewServer(svc, append(opts, extra...)...)
	healthpb.RegisterHealthServer(g, s.health)
	reflection.Register(g)
	return g
}

// interceptors returns the interceptors of every call, first to last: peer
// when not nil, the metrics, the debug log and the token check. (The check
// that the request decoded comes after them: rpc.NewServer adds it.)
func (s *Server) interceptors(m *metrics.Metrics, peer interceptor) (unary []grpc.UnaryServerInterceptor, stream []grpc.StreamServerInterceptor) {
	if peer != nil {
		unary = append(unary, peer.Unary)
		stream = append(stream, peer.Stream)
	}
	unary = append(unary, m.GRPC.UnaryServerInterceptor())
	stream = append(stream, m.GRPC.StreamServerInterceptor())
	// The line per RPC is at debug level; below it the interceptor would
	// still gather its fields on every call, for nothing.
	if s.log.Enabled(context.Background(), slog.LevelDebug) {
		unary = append(unary, logging.UnaryServerInterceptor(rpcLogger(s.log), rpcLogOptions...))
		stream = append(stream, logging.StreamServerInterceptor(rpcLogger(s.log), rpcLogOptions...))
	}
	if s.tokens != nil {
		unary = append(unary, s.tokens.Unary)
		stream = append(stream, s.tokens.Stream)
	}
	return unary, stream
}

// newHTTP returns an HTTP server of h that logs net/http's own errors
// (refused TLS handshakes, …) to the server's log.
func (s *Server) newHTTP(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: s.cfg.Conns.ReadTimeout,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
}

// withBodyDeadline bounds the reading of a request's body to timeout from
// the end of its headers: a client that announces a body and never sends
// it loses its connection. http.Server's ReadTimeout would do it too, but
// it also cancels a watch stream's context once passed.
func withBodyDeadline(h http.Handler, timeout time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength != 0 {
			_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(timeout))
		}
		h.ServeHTTP(w, r)
	})
}

// Run serves on lis until ctx ends, then stops within the shutdown timeout
// and releases what New opened. The listeners are closed when it returns.
func (s *Server) Run(ctx context.Context, lis Listeners) error {
	defer s.closeStore()
	defer lis.Close()

	type httpServe struct {
		srv *http.Server
		lis net.Listener
	}
	httpLis := newLimitListener(lis.HTTP, s.cfg.Conns.MaxConnections, s.log)
	s.http.ConnState = httpLis.connState
	https := []httpServe{{s.http, httpLis}}
	if lis.Debug != nil {
		https = append(https, httpServe{s.newHTTP(debugHandler()), lis.Debug})
		s.log.Info("serving profiles", "debug", lis.Debug.Addr().String())
	}

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.store.Run(gctx) })
	g.Go(func() error { return s.hub.Run(gctx) })
	if s.pusher != nil {
		g.Go(func() error { return s.pusher.Run(gctx) })
	}
	g.Go(func() error {
		s.monitorHealth(gctx)
		return nil
	})
	if len(s.cfg.Groups.FileGroups) > 0 {
		g.Go(func() error {
			s.keepGroups(gctx)
			return nil
		})
	}
	g.Go(func() error {
		if err := s.grpc.Serve(newLimitListener(lis.GRPC, s.cfg.Conns.MaxConnections, s.log)); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return fmt.Errorf("gRPC server: %w", err)
		}
		return nil
	})
	for _, hs := range https {
		g.Go(func() error {
			var err error
			if hs.srv.TLSConfig != nil {
				err = hs.srv.ServeTLS(hs.lis, "", "")
			} else {
				err = hs.srv.Serve(hs.lis)
			}
			if err != nil && !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("HTTP server: %w", err)
			}
			return nil
		})
	}
	g.Go(func() error {
		<-gctx.Done()
		s.log.Info("stopping", "timeout", s.cfg.ShutdownTimeout)
		httpServers := make([]*http.Server, len(https))
		for i, hs := range https {
			httpServers[i] = hs.srv
		}
		s.shutdown(httpServers)
		return nil
	})
	s.log.Info("serving", append([]any{"grpc", lis.GRPC.Addr().String(), "http", lis.HTTP.Addr().String(),
		"tls", s.tls != nil, "auth", s.tokens != nil, "tracing", s.cfg.Tracing}, s.storeAttrs...)...)
	err := g.Wait()
	s.log.Info("stopped")
	return err
}

// shutdown stops the servers within the timeout: in-flight calls finish,
// watch streams end with a cursor to resume from (the hub closes them when
// the context ends), long pulls answer what they have and consume streams
// end after handing their deliveries back (the service's Stop); whatever is
// still open at the bound is cut. It returns only once the streams handed
// back (or the bound passed), since Run closes the store after it.
func (s *Server) shutdown(httpServers []*http.Server) {
	s.health.Shutdown()
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() { s.svc.Stop(ctx) })
	for _, srv := range httpServers {
		wg.Go(func() {
			if err := srv.Shutdown(ctx); err != nil {
				s.log.Warn("HTTP server did not stop in time; closing its connections", "err", err)
				_ = srv.Close()
			}
		})
	}
	wg.Go(func() {
		stopped := make(chan struct{})
		go func() {
			s.grpc.GracefulStop()
			close(stopped)
		}()
		select {
		case <-stopped:
		case <-ctx.Done():
			s.log.Warn("gRPC server did not stop in time; closing its connections")
			s.grpc.Stop()
		}
	})
	wg.Wait()
}

// authenticator returns the token checker, or nil when no token is set.
func authenticator(cfg Config, log *slog.Logger) *auth.Tokens {
	if len(cfg.Auth.Tokens) == 0 {
		log.Warn("no bearer tokens are set (AUTH_TOKENS, -auth-tokens-file): every call is let in")
		return nil
	}
	var open []string
	for name, prefix := range auth.OpenServices {
		if cfg.Auth.Open[name] {
			open = append(open, prefix)
		}
	}
	return auth.New(cfg.Auth.Tokens, open)
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
