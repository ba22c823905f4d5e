// Package inproc calls a gRPC service's unary methods in the caller's own
// goroutine, as a function call through the server's interceptors, with
// none of a connection's encoding, HTTP/2 framing and scheduling: the REST
// gateway's calls come this way. A server-streaming method runs in a
// goroutine of its own through the server's stream interceptors, and its
// messages reach the caller through a channel; other streaming calls are
// refused with UNIMPLEMENTED.
//
// A call sees what it would see on a gRPC server: the caller's outgoing
// metadata as incoming metadata, a ServerTransportStream for
// grpc.SetHeader, grpc.SendHeader and grpc.SetTrailer (whose metadata goes
// to the grpc.Header and grpc.Trailer call options), the server's bound on
// the size of a request, and a status for every error. Messages are copied
// in and out, since the service may keep or change what it was given, and
// the caller what it got back.
package inproc

import (
	"context"
	"sync"

	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// Options configure a Conn.
type Options struct {
	// Interceptors run on every call, first to last, as
	// grpc.ChainUnaryInterceptor would run them on a server.
	Interceptors []grpc.UnaryServerInterceptor
	// StreamInterceptors run on every server-streaming call, first to
	// last, as grpc.ChainStreamInterceptor would run them on a server.
	StreamInterceptors []grpc.StreamServerInterceptor
	// MaxRecvMsgSize bounds the encoded size of a request, as
	// grpc.MaxRecvMsgSize does on a server; 0 means grpc-go's default of
	// 4 MiB.
	MaxRecvMsgSize int
	// TracerProvider gives every call a server span, as OpenTelemetry's
	// gRPC instrumentation does on a server; nil, calls get none and cost
	// nothing for it, not even a no-op tracer's Start (2% of a REST
	// checkout's CPU in the service's profile).
	TracerProvider trace.TracerProvider
}

// defaultMaxRecvMsgSize is grpc-go's server default.
const defaultMaxRecvMsgSize = 4 << 20

// Conn is a client connection whose unary calls are served in process. It is
// a grpc.ServiceRegistrar: register the services it serves before the first
// call.
type Conn struct {
	methods     map[string]method
	streamers   map[string]streamMethod
	interceptor grpc.UnaryServerInterceptor
	streamInt   grpc.StreamServerInterceptor
	maxRecv     int
	tracer      trace.Tracer // nil: no spans
}

// method is a unary method and the service that implements it.
type method struct {
	srv     any
	handler grpc.MethodHandler
	// span names the call's span; service and name are its attributes.
	span, service, name string
}

// serverSpan is the option of every call's span, made once: an option
// made per call costs an allocation.
var serverSpan = trace.WithSpanKind(trace.SpanKindServer)

var (
	_ grpc.ClientConnInterface = (*Conn)(nil)
	_ grpc.ServiceRegistrar    = (*Conn)(nil)
)

// New returns a Conn that serves no service yet.
func New(opts Options) *Conn {
	if opts.MaxRecvMsgSize <= 0 {
		opts.MaxRecvMsgSize = defaultMaxRecvMsgSize
	}
	c := &Conn{
		methods:     map[string]method{},
		streamers:   map[string]streamMethod{},
		interceptor: chain(opts.Interceptors),
		streamInt:   chainStream(opts.StreamInterceptors),
		maxRecv:     opts.MaxRecvMsgSize,
	}
	if opts.TracerProvider != nil {
		c.tracer = opts.TracerProvider.Tracer("github.com/orderexpiry/orderexpiry/internal/inproc")
	}
	return c
}

// RegisterService serves the unary and server-streaming methods of desc
// with impl.
func (c *Conn) RegisterService(desc *grpc.ServiceDesc, impl any) {
	// The span is named as OpenTelemetry's gRPC instrumentation names a
	// server's: the full method without its leading slash.
	for _, m := range desc.Methods {
		c.methods["/"+desc.ServiceName+"/"+m.MethodName] = method{srv: impl, handler: m.Handler,
			span: desc.ServiceName + "/" + m.MethodName, service: desc.ServiceName, name: m.MethodName}
	}
	for _, m := range desc.Streams {
		if m.ServerStreams && !m.ClientStreams {
			c.streamers["/"+desc.ServiceName+"/"+m.StreamName] = streamMethod{srv: impl, handler: m.Handler,
				span: desc.ServiceName + "/" + m.StreamName, service: desc.ServiceName, name: m.StreamName}
		}
	}
}

// Invoke serves a unary call: it copies args into the request, runs the
// interceptors and the method, and copies the response into reply.
func (c *Conn) Invoke(ctx context.Context, fullMethod string, args, reply any, opts ...grpc.CallOption) error {
	m, ok := c.methods[fullMethod]
	if !ok {
		return status.Errorf(codes.Unimplemented, "unknown method %s", fullMethod)
	}
	req, err := c.request(args)
	if err != nil {
		return err
	}
	ctx, span := c.startSpan(ctx, m.span)
	defer span.End()
	ts := &transportStream{method: fullMethod}
	ctx = serverContext(ctx, ts)

	resp, err := m.handler(m.srv, ctx, func(in any) error {
		proto.Merge(in.(proto.Message), req)
		return nil
	}, c.interceptor)
	err = asStatus(err)
	endSpan(span, m.service, m.name, err)
	header, trailer := ts.done()
	for _, o := range opts {
		switch o := o.(type) {
		case grpc.HeaderCallOption:
			*o.HeaderAddr = header
		case grpc.TrailerCallOption:
			*o.TrailerAddr = trailer
		}
	}
	if err != nil {
		return err
	}
	out, ok := reply.(proto.Message)
	if !ok {
		return status.Errorf(codes.Internal, "inproc: the reply is a %T, not a protobuf message", reply)
	}
	proto.Merge(out, resp.(proto.Message))
	return nil
}

// startSpan starts a call's span, named name, or returns a span that
// records nothing when the Conn has no tracer.
func (c *Conn) startSpan(ctx context.Context, name string) (context.Context, trace.Span) {
	if c.tracer == nil {
		return ctx, noop.Span{}
	}
	return c.tracer.Start(ctx, name, serverSpan)
}

// request is a call's request, refused as a server would refuse it before
// the interceptors see it: one that is not a protobuf message, or one over
// the size bound.
func (c *Conn) request(args any) (proto.Message, error) {
	req, ok := args.(proto.Message)
	if !ok {
		return nil, status.Errorf(codes.Internal, "inproc: the request is a %T, not a protobuf message", args)
	}
	if n := proto.Size(req); n > c.maxRecv {
		return nil, status.Errorf(codes.ResourceExhausted, "grpc: received message larger than max (%d vs. %d)", n, c.maxRecv)
	}
	return req, nil
}

// serverContext is the context of a call in process: the caller's
// outgoing metadata (its authorization header among them) is the call's
// incoming metadata, and not the outgoing metadata of whatever call the
// method makes in turn; ts is the call's transport stream.
func serverContext(ctx context.Context, ts *transportStream) context.Context {
	md, _ := metadata.FromOutgoingContext(ctx)
	ctx = metadata.NewIncomingContext(metadata.NewOutgoingContext(ctx, nil), md)
	return grpc.NewContextWithServerTransportStream(ctx, ts)
}

// asStatus is the error a method returned as the caller gets it from a
// server: a status, a context's error keeping its code.
func asStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); !ok {
		return status.FromContextError(err).Err()
	}
	return err
}

// endSpan records a call's outcome on its span.
func endSpan(span trace.Span, service, name string, err error) {
	if !span.IsRecording() {
		return
	}
	code := status.Code(err)
	span.SetAttributes(
		attribute.String("rpc.system", "grpc"),
		attribute.String("rpc.service", service),
		attribute.String("rpc.method", name),
		attribute.Int("rpc.grpc.status_code", int(code)))
	if code != codes.OK {
		span.SetStatus(otelcodes.Error, status.Convert(err).Message())
	}
}

// NewStream opens a server stream in process (see stream.go); any other
// streaming call is refused with UNIMPLEMENTED.
func (c *Conn) NewStream(ctx context.Context, desc *grpc.StreamDesc, fullMethod string, _ ...grpc.CallOption) (grpc.ClientStream, error) {
	if m, ok := c.streamers[fullMethod]; ok && desc.ServerStreams && !desc.ClientStreams {
		return c.newServerStream(ctx, m, fullMethod), nil
	}
	return nil, status.Errorf(codes.Unimplemented, "streaming method %s is not served in process", fullMethod)
}

// chain returns one interceptor that runs ints first to last, or nil for
// none (the generated handlers then call the method directly).
func chain(ints []grpc.UnaryServerInterceptor) grpc.UnaryServerInterceptor {
	switch len(ints) {
	case 0:
		return nil
	case 1:
		return ints[0]
	}
	ints = append([]grpc.UnaryServerInterceptor(nil), ints...)
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		return ints[0](ctx, req, info, next(ints, 1, info, handler))
	}
}

// chainStream is chain for stream interceptors.
func chainStream(ints []grpc.StreamServerInterceptor) grpc.StreamServerInterceptor {
	if len(ints) == 0 {
		return nil
	}
	ints = append([]grpc.StreamServerInterceptor(nil), ints...)
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		return ints[0](srv, ss, info, nextStream(ints, 1, info, handler))
	}
}

// nextStream returns the handler that runs ints[i:] and then handler.
func nextStream(ints []grpc.StreamServerInterceptor, i int, info *grpc.StreamServerInfo, handler grpc.StreamHandler) grpc.StreamHandler {
	if i == len(ints) {
		return handler
	}
	return func(srv any, ss grpc.ServerStream) error {
		return ints[i](srv, ss, info, nextStream(ints, i+1, info, handler))
	}
}

// next returns the handler that runs ints[i:] and then handler.
func next(ints []grpc.UnaryServerInterceptor, i int, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) grpc.UnaryHandler {
	if i == len(ints) {
		return handler
	}
	return func(ctx context.Context, req any) (any, error) {
		return ints[i](ctx, req, info, next(ints, i+1, info, handler))
	}
}

// transportStream keeps the header and trailer a call sets, as a server's
// stream would send them.
type transportStream struct {
	method string

	mu              sync.Mutex
	header, trailer metadata.MD
	// finished is set once the call returned: a header or trailer set
	// later (by a goroutine the method left running) is refused or lost,
	// as it would be on a server.
	finished bool
	// headerSent is set by SendHeader (and a stream's first message): the
	// header may not change after.
	headerSent bool
	// headerOut, for a stream, is closed when the header is sent, sentHeader
	// set before; nil for a unary call, whose header goes with its reply.
	headerOut  chan struct{}
	sentHeader metadata.MD
}

var _ grpc.ServerTransportStream = (*transportStream)(nil)

func (s *transportStream) Method() string { return s.method }

func (s *transportStream) SetHeader(md metadata.MD) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.headerSent || s.finished {
		return status.Error(codes.Internal, "transport: the stream is done or WriteHeader was already called")
	}
	s.header = metadata.Join(s.header, md)
	return nil
}

func (s *transportStream) SendHeader(md metadata.MD) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.headerSent || s.finished {
		return status.Error(codes.Internal, "transport: the stream is done or WriteHeader was already called")
	}
	s.header = metadata.Join(s.header, md)
	s.sendHeaderLocked()
	return nil
}

// sendHeader sends the header unless it was sent: a stream's first message
// does, as on a server.
func (s *transportStream) sendHeader() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.finished {
		return status.Error(codes.Internal, "transport: the stream is done")
	}
	if !s.headerSent {
		s.sendHeaderLocked()
	}
	return nil
}

func (s *transportStream) sendHeaderLocked() {
	s.headerSent = true
	if s.headerOut != nil {
		s.sentHeader = s.header
		if s.sentHeader == nil {
			s.sentHeader = metadata.MD{}
		}
		close(s.headerOut)
	}
}

func (s *transportStream) SetTrailer(md metadata.MD) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.finished {
		return status.Error(codes.Internal, "transport: the stream is done")
	}
	s.trailer = metadata.Join(s.trailer, md)
	return nil
}

// done ends the call and returns its header and trailer.
func (s *transportStream) done() (header, trailer metadata.MD) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.finished = true
	return s.header, s.trailer
}
