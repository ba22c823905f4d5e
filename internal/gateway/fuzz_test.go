package gateway

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// FuzzCheckoutBody posts arbitrary bytes as the body of POST /v1/orders to
// the gateway over a real gRPC server that accepts every checkout. The
// answer must be 200 or 400 (never a 5xx, never a panic) with a JSON object
// as its body; a 400 must say that the request body is at fault.
func FuzzCheckoutBody(f *testing.F) {
	for _, seed := range []string{
		``,
		`{}`,
		`{"orderId":"ord-1","ttl":"5s","metadata":{"k":"v"}}`,
		`{"order_id":"ord-1"}`,
		`{"bogus":1}`,
		`null`,
		`[]`,
		`{"ttl":"-1s"}`,
		`{"orderId":"ord-2","ttl":"1h30m"}`,
		`{"ttl":"2500ms","metadata":{"ttl":"5m"}}`,
		`{"ttl":5}`,
		`{"ttl":"5 minutes"}`,
		`{"ttl":"5m","ttl":"5m"}`,
		`{"orderId":"\ud800"}`,
		"{\"orderId\":\"\xff\"}",
	} {
		f.Add([]byte(seed))
	}
	fake := &fakeServer{checkout: func(req *pb.CheckoutRequest) (*pb.CheckoutResponse, error) {
		return &pb.CheckoutResponse{Order: &pb.Order{OrderId: req.GetOrderId(), Metadata: req.GetMetadata()}, Created: true}, nil
	}}
	g := startGateway(f, fake, nil)
	f.Fuzz(func(t *testing.T, body []byte) {
		req := httptest.NewRequest(http.MethodPost, "/v1/orders", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		served := make(chan struct{})
		go func() {
			defer close(served)
			g.handler.ServeHTTP(rec, req)
		}()
		select {
		case <-served:
		case <-time.After(5 * time.Second):
			t.Fatalf("body %q: no answer within 5s", body)
		}
		switch rec.Code {
		case http.StatusOK, http.StatusBadRequest:
		default:
			t.Fatalf("body %q: status %d, want 200 or 400; response %q", body, rec.Code, rec.Body.Bytes())
		}
		var obj map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &obj); err != nil {
			t.Fatalf("body %q: response %q is not a JSON object: %v", body, rec.Body.Bytes(), err)
		}
		if rec.Code == http.StatusBadRequest {
			if msg, _ := obj["message"].(string); !strings.HasPrefix(msg, "request body") {
				t.Fatalf("body %q: 400 with message %q, want it to start with \"request body\"", body, msg)
			}
		}
	})
}
