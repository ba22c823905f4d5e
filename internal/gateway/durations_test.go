package gateway

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/reflect/protoreflect"

	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// TestGoDurations rewrites the Go-style durations of a body, wherever the
// message's descriptor puts a duration, and leaves every other byte alone.
func TestGoDurations(t *testing.T) {
	checkout := (&pb.CheckoutRequest{}).ProtoReflect().Descriptor()
	batch := (&pb.BatchCheckoutRequest{}).ProtoReflect().Descriptor()
	group := (&pb.CreateConsumerGroupRequest{}).ProtoReflect().Descriptor()
	for _, tc := range []struct {
		name    string
		md      protoreflect.MessageDescriptor
		body    string
		want    string // "" : nothing to rewrite
		wantErr string
	}{
		{name: "minutes", md: checkout, body: `{"orderId":"a","ttl":"5m"}`, want: `{"orderId":"a","ttl":"300s"}`},
		{name: "proto name", md: checkout, body: `{"order_id":"a", "ttl" :  "1h30m" }`, want: `{"order_id":"a", "ttl" :  "5400s" }`},
		{name: "milliseconds", md: checkout, body: `{"ttl":"2500ms"}`, want: `{"ttl":"2.500s"}`},
		{name: "zero", md: checkout, body: `{"ttl":"0"}`, want: `{"ttl":"0s"}`},
		{name: "escaped", md: checkout, body: `{"ttl":"5\u006d"}`, want: `{"ttl":"300s"}`},
		{name: "protobuf's form is left", md: checkout, body: `{"ttl":"300s"}`},
		{name: "null", md: checkout, body: `{"ttl":null}`},
		{name: "other strings are left", md: checkout, body: `{"orderId":"5m","metadata":{"ttl":"5m"}}`},
		{name: "unknown fields are left", md: checkout, body: `{"wait":"5m","x":{"ttl":"5m"}}`},
		{name: "nested in a list", md: batch, body: `{"requests":[{"ttl":"1m"},{"ttl":"90s"},{"ttl":"1m30s"}]}`,
			want: `{"requests":[{"ttl":"60s"},{"ttl":"90s"},{"ttl":"90s"}]}`},
		{name: "nested message", md: group, body: `{"ackDeadline":"1m","pushConfig":{"url":"u","timeout":"2500ms"}}`,
			want: `{"ackDeadline":"60s","pushConfig":{"url":"u","timeout":"2.500s"}}`},
		{name: "a number", md: checkout, body: `{"ttl":5}`,
			wantErr: `field "ttl": the number 5 is not a duration; write a string such as "300s", "5m", "1h30m" or "2500ms"`},
		{name: "a number in a list", md: batch, body: `{"requests":[{"ttl":"1m"},{"ttl":7.5}]}`,
			wantErr: `field "requests[1].ttl": the number 7.5 is not a duration`},
		{name: "not a duration", md: group, body: `{"pushConfig":{"timeout":"5 minutes"}}`,
			wantErr: `field "pushConfig.timeout": "5 minutes" is not a duration; write a string such as "300s"`},
		{name: "a bool", md: checkout, body: `{"ttl":true}`, wantErr: `field "ttl": true is not a duration`},
		{name: "an object is protojson's to refuse", md: checkout, body: `{"ttl":{"seconds":5}}`},
		{name: "not JSON", md: checkout, body: `{"ttl":"5m"`},
		{name: "not an object", md: checkout, body: `["5m"]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := goDurations([]byte(tc.body), tc.md)
			if tc.wantErr != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tc.wantErr) {
					t.Fatalf("goDurations(%s) = %q, %v; want the error %q", tc.body, got, err, tc.wantErr)
				}
				return
			}
			if err != nil || string(got) != tc.want {
				t.Fatalf("goDurations(%s) = %q, %v; want %q", tc.body, got, err, tc.want)
			}
		})
	}
}

// TestCheckoutGoDurations posts checkouts with durations written the Go
// way through the gateway: the service gets the duration meant, and a
// number is refused with an example of a duration.
func TestCheckoutGoDurations(t *testing.T) {
	fake := &fakeServer{}
	g := startGateway(t, fake, nil)
	for body, want := range map[string]time.Duration{
		`{"orderId":"d-1","ttl":"5m"}`:     5 * time.Minute,
		`{"orderId":"d-2","ttl":"1h30m"}`:  90 * time.Minute,
		`{"orderId":"d-3","ttl":"2500ms"}`: 2500 * time.Millisecond,
		`{"orderId":"d-4","ttl":"300s"}`:   5 * time.Minute,
	} {
		resp, out := do(t, http.MethodPost, g.url("/v1/orders"), body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %d %s", body, resp.StatusCode, out)
		}
		reqs := fake.recorded()
		got := reqs[len(reqs)-1].(*pb.CheckoutRequest).GetTtl().AsDuration()
		if got != want {
			t.Errorf("%s: the service got ttl %v, want %v", body, got, want)
		}
	}
	resp, out := do(t, http.MethodPost, g.url("/v1/orders"), `{"orderId":"d-5","ttl":5}`)
	var e struct{ Message string }
	_ = json.Unmarshal(out, &e)
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(e.Message, `field "ttl": the number 5 is not a duration; write a string such as "300s", "5m"`) {
		t.Fatalf("ttl 5: %d %s, want 400 with an example of a duration", resp.StatusCode, out)
	}
	if n := len(fake.recorded()); n != 4 {
		t.Fatalf("the service got %d checkouts, want 4 (not the refused one)", n)
	}
}
