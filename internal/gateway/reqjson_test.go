package gateway

import (
	"testing"

	"google.golang.org/protobuf/proto"

	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// FuzzDecodeCheckout: wherever decodeCheckout takes a body, protojson (as
// the gateway sets it up) takes it too and decodes the same request; and
// it leaves the request as it was where it does not.
func FuzzDecodeCheckout(f *testing.F) {
	for _, seed := range []string{
		`{"orderId":"o-1","ttl":"3600s"}`,
		` { "ttl" : "0s" , "orderId" : "" , "metadata" : { "a" : "1" , "b" : "" } } `,
		`{"metadata":{}}`,
		`{}`,
		`{"orderId":"o-1","orderId":"o-2"}`,
		`{"metadata":{"a":"1","a":"2"}}`,
		`{"orderId":"o-1",}`,
		`{"ttl":"315576000000s"}`,
		`{"ttl":"315576000001s"}`,
		`{"ttl":"007s"}`,
		`{"ttl":"1.5s"}`,
		`{"ttl":"-1s"}`,
		`{"ttl":null}`,
		`{"orderId":"\u00e9"}`,
		`{"orderId":"é"}`,
		"{\"orderId\":\"\xff\"}",
		"{\"orderId\":\"a\tb\"}",
		`{"order_id":"o-1"}`,
		`{"deadline":"2030-01-01T00:00:00Z"}`,
		`{"orderId":"o-1"} {}`,
		`[]`,
		``,
	} {
		f.Add([]byte(seed))
	}
	// The gateway's own options, not a copy of them: the marshaler's
	// unmarshal would take the hand path first.
	_, m := newMux()
	opts := m.UnmarshalOptions
	f.Fuzz(func(t *testing.T, body []byte) {
		got := &pb.CheckoutRequest{OrderId: "before"}
		if !decodeCheckout(body, got) {
			if got.GetOrderId() != "before" || got.GetTtl() != nil || got.GetMetadata() != nil {
				t.Fatalf("%q: refused, but the request changed to %v", body, got)
			}
			return
		}
		want := &pb.CheckoutRequest{}
		if err := opts.Unmarshal(body, want); err != nil {
			t.Fatalf("%q: decoded by hand to %v; protojson refuses it: %v", body, got, err)
		}
		if !proto.Equal(got, want) {
			t.Fatalf("%q: decoded by hand to %v; protojson to %v", body, got, want)
		}
	})
}

// TestDecodeCheckoutTakesTheCommonBody: the bodies the clients send (the
// Go client's and the bench's among them) are decoded by hand, not left to
// protojson.
func TestDecodeCheckoutTakesTheCommonBody(t *testing.T) {
	for _, body := range []string{
		`{"orderId":"tp-1","ttl":"3600s"}`,
		`{"orderId":"o-1","ttl":"60s","metadata":{"k":"v","cart":"c-9"}}`,
		"{\n  \"orderId\": \"o-1\",\n  \"ttl\": \"900s\"\n}\n",
	} {
		var req pb.CheckoutRequest
		if !decodeCheckout([]byte(body), &req) {
			t.Errorf("%q: left to protojson", body)
		}
	}
}
