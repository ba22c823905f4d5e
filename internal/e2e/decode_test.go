package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// TestMalformedEveryMethod: every method of the service, read from its
// descriptor so that a new one is covered too, refuses a request that does
// not decode with INVALID_ARGUMENT naming its message type, on the gRPC
// port, instead of running on an empty request (which answered OK with a
// list, or "order_id is required", for 11 of 18 methods).
func TestMalformedEveryMethod(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)
	// Field 1, length-delimited, 127 bytes long, of which one is sent.
	bad := []byte{0x0a, 0x7f, 'a'}
	desc := pb.OrderService_ServiceDesc
	type method struct {
		name   string
		stream bool
	}
	var methods []method
	for _, m := range desc.Methods {
		methods = append(methods, method{m.MethodName, false})
	}
	for _, m := range desc.Streams {
		methods = append(methods, method{m.StreamName, true})
	}
	if len(methods) < 18 {
		t.Fatalf("%d methods in the descriptor, want at least 18", len(methods))
	}
	for _, m := range methods {
		t.Run(m.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			full := "/" + desc.ServiceName + "/" + m.name
			var err error
			var out []byte
			if !m.stream {
				err = s.Conn.Invoke(ctx, full, bad, &out, grpc.ForceCodec(rawCodec{}))
			} else {
				var cs grpc.ClientStream
				cs, err = s.Conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, full, grpc.ForceCodec(rawCodec{}))
				if err == nil {
					if err = cs.SendMsg(bad); err == nil {
						_ = cs.CloseSend()
						err = cs.RecvMsg(&out)
					}
				}
			}
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), "is not a valid orderexpiry.v1.") {
				t.Errorf("%s with a request that does not decode: %v; want INVALID_ARGUMENT saying it is not a valid message", m.name, err)
			}
		})
	}
}
