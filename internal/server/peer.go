package server

import (
	"context"
	"net"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
)

// interceptor is a pair of gRPC server interceptors.
type interceptor interface {
	Unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error)
	Stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error
}

// gatewayPeer makes a REST call's peer the HTTP client (instead of no peer
// at all: the gateway's calls run in process), so that the debug log names
// who called.
// The gateway appends the client's address to x-forwarded-for last, after
// whatever the client sent itself; only the gateway's calls pass here.
type gatewayPeer struct{}

func (gatewayPeer) Unary(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	return handler(withGatewayPeer(ctx), req)
}

func (gatewayPeer) Stream(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	return handler(srv, peerStream{ServerStream: ss, ctx: withGatewayPeer(ss.Context())})
}

func withGatewayPeer(ctx context.Context) context.Context {
	xff := metadata.ValueFromIncomingContext(ctx, "x-forwarded-for")
	if len(xff) == 0 {
		return ctx
	}
	last := xff[len(xff)-1]
	if i := strings.LastIndexByte(last, ','); i >= 0 {
		last = last[i+1:]
	}
	ip := net.ParseIP(strings.TrimSpace(last))
	if ip == nil {
		return ctx
	}
	p := &peer.Peer{Addr: &net.IPAddr{IP: ip}}
	if old, ok := peer.FromContext(ctx); ok {
		p.LocalAddr, p.AuthInfo = old.LocalAddr, old.AuthInfo
	}
	return peer.NewContext(ctx, p)
}

// peerStream is a server stream with another context.
type peerStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s peerStream) Context() context.Context { return s.ctx }
