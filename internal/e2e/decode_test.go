package e2e

import (
	"strings"
	"testing"

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
			err := rawCall(s.Conn, m.name, bad, m.stream)
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), "is not a valid orderexpiry.v1.") {
				t.Errorf("%s with a request that does not decode: %v; want INVALID_ARGUMENT saying it is not a valid message", m.name, err)
			}
		})
	}
}
