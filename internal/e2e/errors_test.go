package e2e

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// TestErrorDetails: an error carries its reason and the field it is about
// as google.rpc details, on the gRPC port and in the REST body
// ("details", each with its "@type"), with the HTTP status of its code:
// a bad ttl is 400 with a BadRequest field violation naming ttl, an
// unknown order 404 with ErrorInfo reason ORDER_NOT_FOUND, and a push host
// the service does not allow names the flag that allows it.
func TestErrorDetails(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil, "-push-allow-hosts=hooks.example.com")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	t.Run("REST", func(t *testing.T) {
		for _, tt := range []struct {
			name, method, path, body string
			wantHTTP                 int
			reason, field            string
		}{
			{"bad ttl", "POST", "/v1/orders", `{"orderId":"e-1","ttl":"0s"}`, http.StatusBadRequest, "INVALID_TTL", "ttl"},
			{"bad cursor", "GET", "/v1/expirations:watch?after_cursor=x", "", http.StatusBadRequest, "INVALID_CURSOR", "after_cursor"},
			{"unknown order", "GET", "/v1/orders/none-such", "", http.StatusNotFound, "ORDER_NOT_FOUND", "order_id"},
			{"push host", "POST", "/v1/groups", `{"groupId":"e-g","pushConfig":{"url":"https://evil.example.net/","secret":"` + pushSecret + `"}}`,
				http.StatusBadRequest, "PUSH_HOST_NOT_ALLOWED", "pushConfig.url"},
		} {
			code, body := s.restCall(t, tt.method, tt.path, tt.body)
			if code != tt.wantHTTP {
				t.Errorf("%s: %s %s: %d %v, want %d", tt.name, tt.method, tt.path, code, body, tt.wantHTTP)
				continue
			}
			var info, bad map[string]any
			details, _ := body["details"].([]any)
			for _, d := range details {
				d, _ := d.(map[string]any)
				switch d["@type"] {
				case "type.googleapis.com/google.rpc.ErrorInfo":
					info = d
				case "type.googleapis.com/google.rpc.BadRequest":
					bad = d
				}
			}
			md, _ := info["metadata"].(map[string]any)
			if info["reason"] != tt.reason || info["domain"] != "orderexpiry.dev" || md["field"] != snake(tt.field) {
				t.Errorf("%s: ErrorInfo %v in %v, want reason %s, domain orderexpiry.dev, field %s", tt.name, info, body, tt.reason, snake(tt.field))
			}
			if tt.wantHTTP != http.StatusBadRequest {
				if bad != nil {
					t.Errorf("%s: a BadRequest in %v", tt.name, body)
				}
				continue
			}
			v, _ := bad["fieldViolations"].([]any)
			if len(v) != 1 || fmt.Sprint(v[0].(map[string]any)["field"]) != snake(tt.field) ||
				v[0].(map[string]any)["description"] != body["message"] {
				t.Errorf("%s: BadRequest %v in %v, want one violation of %s saying the message", tt.name, bad, body, snake(tt.field))
			}
		}
		// The flag that lifts a refusal is in the message and ErrorInfo.
		_, body := s.restCall(t, "POST", "/v1/groups", `{"groupId":"e-g","pushConfig":{"url":"http://hooks.example.com/","secret":"`+pushSecret+`"}}`)
		if msg := fmt.Sprint(body["message"]); msg != `push_config.url "http://hooks.example.com/" is http, and this service pushes over https only; use https, or start the service allowing http push URLs (-push-allow-http)` {
			t.Errorf("http push URL: message %q", msg)
		}
	})

	t.Run("gRPC", func(t *testing.T) {
		_, err := s.Client.Checkout(ctx, &pb.CheckoutRequest{OrderId: "e-2", Ttl: durationpb.New(-time.Second)})
		st := status.Convert(err)
		var info *errdetails.ErrorInfo
		var bad *errdetails.BadRequest
		for _, d := range st.Details() {
			switch d := d.(type) {
			case *errdetails.ErrorInfo:
				info = d
			case *errdetails.BadRequest:
				bad = d
			}
		}
		if st.Code() != codes.InvalidArgument || info.GetReason() != "INVALID_TTL" || info.GetDomain() != "orderexpiry.dev" {
			t.Errorf("checkout with a negative ttl: %v, ErrorInfo %v; want INVALID_ARGUMENT, reason INVALID_TTL", err, info)
		}
		if v := bad.GetFieldViolations(); len(v) != 1 || v[0].GetField() != "ttl" || v[0].GetDescription() != st.Message() {
			t.Errorf("checkout with a negative ttl: BadRequest %v, want one violation of ttl", bad)
		}
		_, err = s.Client.CompleteOrder(ctx, &pb.CompleteOrderRequest{OrderId: "none-such"})
		if st := status.Convert(err); st.Code() != codes.NotFound || len(st.Details()) != 1 ||
			st.Details()[0].(*errdetails.ErrorInfo).GetReason() != "ORDER_NOT_FOUND" {
			t.Errorf("complete of an unknown order: %v %v, want NOT_FOUND with ErrorInfo ORDER_NOT_FOUND", err, st.Details())
		}
	})
}

// snake is the API's name of a field that a test wrote as JSON does
// (pushConfig.url → push_config.url): details name fields as the proto
// does, whichever the port.
func snake(field string) string {
	out := make([]byte, 0, len(field)+4)
	for i := 0; i < len(field); i++ {
		c := field[i]
		if c >= 'A' && c <= 'Z' {
			out = append(out, '_', c+'a'-'A')
			continue
		}
		out = append(out, c)
	}
	return string(out)
}
