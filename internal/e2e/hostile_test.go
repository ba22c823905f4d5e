package e2e

// Hostile clients: each test replays one finding of a probe of the service
// as an attacker would, through the real ports, and checks that the server
// answers with the right code and keeps its memory, descriptors and
// goroutines bounded. Tests about resources log a RESULT line with the
// figures, for RELIABILITY.md.

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "github.com/orderexpiry/orderexpiry/internal/gen/orderexpiry/v1"
)

// TestHostileDotIDs: the order ids "." and "..", which URL clients
// normalise away as path segments, are refused on both ports and never
// written; ids that merely contain dots are still fine.
func TestHostileDotIDs(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)
	ctx := context.Background()
	for _, id := range []string{".", ".."} {
		t.Run(id, func(t *testing.T) {
			_, err := s.Client.Checkout(ctx, &pb.CheckoutRequest{OrderId: id})
			wantCode(t, err, codes.InvalidArgument)
			if msg := status.Convert(err).Message(); !strings.Contains(msg, "order_id") || !strings.Contains(msg, `"`+id+`"`) {
				t.Fatalf("message %q does not name order_id and %q", msg, id)
			}
			_, err = s.Client.GetOrder(ctx, &pb.GetOrderRequest{OrderId: id})
			wantCode(t, err, codes.InvalidArgument)
			code, _, body := httpCall(t, s.HTTP, "POST", s.URL("/v1/orders"), "", `{"orderId":"`+id+`","ttl":"60s"}`)
			if e := jsonError(body); code != 400 || e.Code != int(codes.InvalidArgument) || !strings.Contains(e.Message, "order_id") {
				t.Fatalf("REST checkout of %q: %d %s, want 400 naming order_id", id, code, body)
			}
			// Escaped, the segment reaches the server as the id itself.
			code, _, body = httpCall(t, s.HTTP, "GET", s.URL("/v1/orders/"+strings.ReplaceAll(id, ".", "%2E")), "", "")
			if e := jsonError(body); code != 400 || e.Code != int(codes.InvalidArgument) {
				t.Fatalf("REST get of %q: %d %s, want 400", id, code, body)
			}
		})
	}
	for _, id := range []string{"...", ".a", "a.", "a..b", "v1.2"} {
		if _, err := s.Client.Checkout(ctx, &pb.CheckoutRequest{OrderId: id}); err != nil {
			t.Errorf("checkout of %q: %v", id, err)
		}
	}
}

// TestHostileCursorPartsClipped: a cursor with the wrong number of parts
// (here 1,024 parts of the longest cursor, 43 KB, against a log of one
// partition) is refused with a short message that does not repeat it.
func TestHostileCursorPartsClipped(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)
	part := "18446744073709551615-18446744073709551615"
	parts := make([]string, 1024)
	for i := range parts {
		parts[i] = part
	}
	cursor := strings.Join(parts, ",")
	const maxMessage = 512

	stream, err := s.Client.WatchExpirations(context.Background(), &pb.WatchExpirationsRequest{AfterCursor: cursor})
	if err == nil {
		_, err = stream.Recv()
	}
	wantCode(t, err, codes.InvalidArgument)
	msg := status.Convert(err).Message()
	if len(msg) > maxMessage || !strings.Contains(msg, "1024 part(s)") || !strings.Contains(msg, "1 partition(s)") {
		t.Fatalf("gRPC: a message of %d bytes (%.200q…); want at most %d naming 1024 parts and 1 partition", len(msg), msg, maxMessage)
	}

	code, _, body := httpCall(t, s.HTTP, "GET", s.URL("/v1/expirations:watch?after_cursor="+url.QueryEscape(cursor)), "", "")
	if e := jsonError(body); code != 400 || e.Code != int(codes.InvalidArgument) || len(body) > maxMessage+64 {
		t.Fatalf("REST: %d and a body of %d bytes (%.200q…); want 400 and a short message", code, len(body), body)
	}
	code, _, sse := s.sseReject(t, cursor)
	if m, _ := sse["message"].(string); code != 400 || len(m) > maxMessage {
		t.Fatalf("REST with Last-Event-ID: %d and a message of %d bytes; want 400 and a short message", code, len(m))
	}
}

// TestHostileBearerExact: an authorization header is "Bearer", one space
// and the token (the scheme in any case), with nothing around them; two
// spaces, a tab, a space at either end or a second word are refused on the
// gRPC port and through the gateway.
func TestHostileBearerExact(t *testing.T) {
	t.Parallel()
	s := startServerWith(t, serverOptions{Token: tokenA}, map[string]string{"AUTH_TOKENS": tokenA})
	bare := pb.NewOrderServiceClient(dialServer(t, s.GRPCAddr, nil, ""))
	tests := []struct {
		name, header string
		ok           bool
		grpc, rest   bool // sent on the gRPC port, through the gateway
	}{
		{"one space", "Bearer " + tokenA, true, true, true},
		{"scheme in another case", "bEARER " + tokenA, true, true, true},
		{"two spaces", "Bearer  " + tokenA, false, true, true},
		{"a second word", "Bearer " + tokenA + " " + tokenA, false, true, true},
		{"token and a comma", "Bearer " + tokenA + ",", false, true, true},
		// gRPC clients refuse to send a tab in metadata.
		{"tab", "Bearer\t" + tokenA, false, false, true},
		// HTTP drops the white space around a header's value before the
		// service sees it (RFC 9110, section 5.5), so these go over gRPC.
		{"trailing space", "Bearer " + tokenA + " ", false, true, false},
		{"leading space", " Bearer " + tokenA, false, true, false},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id := fmt.Sprint("bearer-", i)
			if tc.grpc {
				ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", tc.header)
				_, err := bare.Checkout(ctx, &pb.CheckoutRequest{OrderId: id})
				if tc.ok && err != nil {
					t.Fatalf("gRPC with %q: %v", tc.header, err)
				}
				if !tc.ok {
					wantCode(t, err, codes.Unauthenticated)
					if strings.Contains(status.Convert(err).Message(), tokenA) {
						t.Fatalf("the refusal echoes the token: %v", err)
					}
				}
			}
			if !tc.rest {
				return
			}
			code, h, body := httpCall(t, s.HTTP, "POST", s.URL("/v1/orders"), tc.header, `{"orderId":"`+id+`-rest"}`)
			if tc.ok {
				if code != 200 {
					t.Fatalf("REST with %q: %d %s", tc.header, code, body)
				}
				return
			}
			want401(t, code, h, body, []string{tokenA})
		})
	}
}
