package inproc

import (
	"context"
	"io"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// streamMethod is a server-streaming method and the service that
// implements it.
type streamMethod struct {
	srv     any
	handler grpc.StreamHandler
	// span names the call's span; service and name are its attributes.
	span, service, name string
}

// streamBuffer is how many messages a server stream holds for its caller
// before its SendMsg waits, as a connection's flow-control window would
// hold them; the caller reads them as fast as it passes them on.
const streamBuffer = 64

// InProcess reports whether ctx is that of a call served in process (its
// transport stream is this package's): its messages are handed over as
// they are, so a method gains nothing by sending one in its wire form, and
// may not (SendMsg takes protobuf messages only).
func InProcess(ctx context.Context) bool {
	_, ok := grpc.ServerTransportStreamFromContext(ctx).(*transportStream)
	return ok
}

// clientStream is the caller's end of a server stream served in process.
// SendMsg, given the request, starts the method in a goroutine; what it
// sends comes through msgs, its header through ts; ended is closed once it
// returned, after which err (a status, nil for OK) and trailer do not
// change.
type clientStream struct {
	// caller is the caller's context; ctx, the call's, is also cancelled
	// once the method returned.
	caller context.Context
	ctx    context.Context
	cancel context.CancelFunc
	conn   *Conn
	m      streamMethod
	method string

	started bool
	ts      *transportStream
	msgs    chan proto.Message
	ended   chan struct{}

	err     error
	trailer metadata.MD
}

var _ grpc.ClientStream = (*clientStream)(nil)

func (c *Conn) newServerStream(caller context.Context, m streamMethod, fullMethod string) *clientStream {
	ctx, cancel := context.WithCancel(caller)
	return &clientStream{caller: caller, ctx: ctx, cancel: cancel, conn: c, m: m, method: fullMethod,
		ts:   &transportStream{method: fullMethod, headerOut: make(chan struct{})},
		msgs: make(chan proto.Message, streamBuffer), ended: make(chan struct{})}
}

// SendMsg takes the request, the one message of a server stream, and starts
// the method. An error of the call is the caller's to read with RecvMsg, as
// from a server.
func (cs *clientStream) SendMsg(m any) error {
	if cs.started {
		return status.Error(codes.Internal, "inproc: a server stream takes one request")
	}
	cs.started = true
	req, err := cs.conn.request(m)
	if err != nil {
		cs.end(err)
		return nil
	}
	go cs.serve(proto.Clone(req))
	return nil
}

// serve runs the method through the stream interceptors, in its own
// goroutine, and ends the call with what it returned.
func (cs *clientStream) serve(req proto.Message) {
	c := cs.conn
	ctx, span := c.startSpan(cs.ctx, cs.m.span)
	ss := &serverStream{ctx: serverContext(ctx, cs.ts), ts: cs.ts, msgs: cs.msgs, req: req}
	var err error
	if c.streamInt != nil {
		err = c.streamInt(cs.m.srv, ss, &grpc.StreamServerInfo{FullMethod: cs.method, IsServerStream: true}, cs.m.handler)
	} else {
		err = cs.m.handler(cs.m.srv, ss)
	}
	err = asStatus(err)
	endSpan(span, cs.m.service, cs.m.name, err)
	span.End()
	cs.end(err)
}

// end records the call's outcome and lets the caller read it.
func (cs *clientStream) end(err error) {
	_, cs.trailer = cs.ts.done()
	cs.err = err
	close(cs.ended)
	cs.cancel()
}

// Header waits for the method's header and returns it; nil, as from a
// server, when the call ended without one (its error is RecvMsg's).
func (cs *clientStream) Header() (metadata.MD, error) {
	select {
	case <-cs.ts.headerOut:
	case <-cs.ended:
	case <-cs.ctx.Done():
	}
	select {
	case <-cs.ts.headerOut:
		return cs.ts.sentHeader.Copy(), nil
	default:
		return nil, nil
	}
}

// Trailer returns the trailer once the call has ended, nil before.
func (cs *clientStream) Trailer() metadata.MD {
	select {
	case <-cs.ended:
		return cs.trailer
	default:
		return nil
	}
}

func (cs *clientStream) CloseSend() error { return nil }

func (cs *clientStream) Context() context.Context { return cs.ctx }

// RecvMsg copies the next message the method sent into m; once it has
// returned and every message is read, it returns io.EOF, or its error. It
// returns CANCELED or DEADLINE_EXCEEDED when the caller's context ends,
// even if the method goes on.
func (cs *clientStream) RecvMsg(m any) error {
	out, ok := m.(proto.Message)
	if !ok {
		return status.Errorf(codes.Internal, "inproc: the reply is a %T, not a protobuf message", m)
	}
	select {
	case msg := <-cs.msgs:
		proto.Merge(out, msg)
		return nil
	case <-cs.ended:
		// What the method sent before it returned comes first.
		select {
		case msg := <-cs.msgs:
			proto.Merge(out, msg)
			return nil
		default:
		}
		if cs.err != nil {
			return cs.err
		}
		return io.EOF
	case <-cs.caller.Done():
		return status.FromContextError(cs.caller.Err()).Err()
	}
}

// serverStream is the method's end of a server stream served in process.
type serverStream struct {
	ctx  context.Context
	ts   *transportStream
	msgs chan<- proto.Message
	// req is the request, until the method has read it.
	req proto.Message
}

var _ grpc.ServerStream = (*serverStream)(nil)

func (ss *serverStream) Context() context.Context { return ss.ctx }

func (ss *serverStream) SetHeader(md metadata.MD) error { return ss.ts.SetHeader(md) }

func (ss *serverStream) SendHeader(md metadata.MD) error { return ss.ts.SendHeader(md) }

func (ss *serverStream) SetTrailer(md metadata.MD) { _ = ss.ts.SetTrailer(md) }

// SendMsg sends m, the header first if it was not sent, and waits while
// the caller has streamBuffer messages to read, until the call's context
// ends. The caller's RecvMsg copies m: as on a gRPC server, the method may
// not change m once sent (grpc.ServerStream's contract), so it is not
// copied here.
func (ss *serverStream) SendMsg(m any) error {
	msg, ok := m.(proto.Message)
	if !ok {
		return status.Errorf(codes.Internal, "inproc: the message is a %T, not a protobuf message", m)
	}
	if err := ss.ts.sendHeader(); err != nil {
		return err
	}
	select {
	case ss.msgs <- msg:
		return nil
	case <-ss.ctx.Done():
		return status.FromContextError(ss.ctx.Err()).Err()
	}
}

// RecvMsg copies the request into m, then returns io.EOF: the caller sends
// one.
func (ss *serverStream) RecvMsg(m any) error {
	if ss.req == nil {
		return io.EOF
	}
	in, ok := m.(proto.Message)
	if !ok {
		return status.Errorf(codes.Internal, "inproc: the request is read into a %T, not a protobuf message", m)
	}
	proto.Merge(in, ss.req)
	ss.req = nil
	return nil
}
