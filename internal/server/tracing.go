package server

import (
	"net/http"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
)

// The instrumentation below is installed only when Config.Tracing is set
// (see the tracing package): off, no handler stands in the way of a call,
// rather than one that would find a no-op tracer on every call. Its spans
// go to the global tracer provider, and the trace context travels in W3C
// traceparent headers: from a REST caller through the gateway's call (in
// process for unary calls, whose span inproc starts; on the internal
// connection for streams) to the service and on to Redis.

// tracedServer is the option that gives each call a gRPC server a span,
// a child of the caller's when its metadata carries one.
func (s *Server) tracedServer() []grpc.ServerOption {
	if !s.cfg.Tracing {
		return nil
	}
	return []grpc.ServerOption{grpc.StatsHandler(otelgrpc.NewServerHandler())}
}

// tracerProvider is the provider of the spans of the gateway's calls in
// process (see inproc), nil when tracing is off.
func (s *Server) tracerProvider() trace.TracerProvider {
	if !s.cfg.Tracing {
		return nil
	}
	return otel.GetTracerProvider()
}

// tracedHTTP gives each request to h a span, a child of the caller's when
// its traceparent header names one. The probes and scrapes of /healthz,
// /livez and /metrics, every few seconds from every monitor, get none.
func (s *Server) tracedHTTP(h http.Handler) http.Handler {
	if !s.cfg.Tracing {
		return h
	}
	return otelhttp.NewHandler(h, "orderexpiry", otelhttp.WithFilter(func(r *http.Request) bool {
		return r.URL.Path != "/healthz" && r.URL.Path != "/livez" && r.URL.Path != "/metrics"
	}))
}
