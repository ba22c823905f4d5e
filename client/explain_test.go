package client_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/orderexpiry/orderexpiry/client"
	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// TestErrorsSayWhatToSet: a client whose settings do not fit the service
// (TLS against a plaintext port, plaintext against a TLS one, a CA it does
// not trust, no token or a wrong one) gets an error that names the option
// and the flag to set, for a call and for a watch, with the code it had.
func TestErrorsSayWhatToSet(t *testing.T) {
	t.Parallel()
	cert, key := selfSigned(t)
	tlsPort := startServer(t, map[string]string{"AUTH_TOKENS": "s3cret"}, "-tls-cert", cert, "-tls-key", key).GRPCAddr
	plainPort := startServer(t, map[string]string{"AUTH_TOKENS": "s3cret"}).GRPCAddr

	for _, tc := range []struct {
		name     string
		addr     string
		opts     client.Options
		code     codes.Code
		mentions []string
	}{
		{"TLS against plaintext", plainPort, client.Options{Token: "s3cret"}, codes.Unavailable,
			[]string{"does not speak TLS", "Options.Insecure", "-insecure"}},
		{"plaintext against TLS", tlsPort, client.Options{Insecure: true, Token: "s3cret"}, codes.Unavailable,
			[]string{"if it serves TLS", "without Options.Insecure", "drop -insecure"}},
		{"untrusted certificate", tlsPort, client.Options{Token: "s3cret"}, codes.Unavailable,
			[]string{"certificate", "Options.CAFile", "-ca"}},
		{"no token", plainPort, client.Options{Insecure: true}, codes.Unauthenticated,
			[]string{"missing bearer token", "Options.Token", "-token", "ORDEREXPIRY_TOKEN"}},
		{"wrong token", tlsPort, client.Options{CAFile: cert, Token: "wrong"}, codes.Unauthenticated,
			[]string{"refused the token", "-token", "ORDEREXPIRY_TOKEN"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := dial(t, tc.addr, tc.opts)
			check := func(what string, err error) {
				t.Helper()
				if status.Code(err) != tc.code {
					t.Fatalf("%s: %v, want %v", what, err, tc.code)
				}
				for _, m := range tc.mentions {
					if !strings.Contains(err.Error(), m) {
						t.Errorf("%s: %q does not say %q", what, err, m)
					}
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, err := c.GetOrder(ctx, &pb.GetOrderRequest{OrderId: "x"})
			check("GetOrder", err)
			stream, err := c.WatchExpirations(ctx, &pb.WatchExpirationsRequest{})
			if err == nil {
				_, err = stream.Recv()
			}
			check("WatchExpirations", err)
		})
	}
}
