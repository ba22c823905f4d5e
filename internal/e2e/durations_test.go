package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestRESTGoDurations writes every duration a REST call reads the Go way
// ("5m", "1h30m", "2500ms"), as grpcurl and the service's own messages
// write them: the ttl of a checkout, of a batch's items and of a
// reschedule, a group's ack deadline and push timeout, a pull's wait and a
// nack's retry_after. A number is refused with an example, and the
// service's messages write durations the same way.
func TestRESTGoDurations(t *testing.T) {
	s := startServer(t, nil, pushFlags...)

	// remaining reads a duration of a response, which the service writes
	// in protobuf's form ("299.998s").
	remaining := func(v any) time.Duration {
		t.Helper()
		str, _ := v.(string)
		d, err := time.ParseDuration(str)
		if err != nil {
			t.Fatalf("%v is not a duration: %v", v, err)
		}
		return d
	}
	near := func(what string, got, want time.Duration) {
		t.Helper()
		if got > want || got < want-10*time.Second {
			t.Errorf("%s: %v, want just under %v", what, got, want)
		}
	}

	code, body := s.restCall(t, "POST", "/v1/orders", `{"orderId":"d-1","ttl":"5m"}`)
	if code != http.StatusOK {
		t.Fatalf("checkout with ttl 5m: %d %v", code, body)
	}
	near("ttl 5m", remaining(field(body, "order", "ttlRemaining")), 5*time.Minute)

	code, body = s.restCall(t, "POST", "/v1/orders:batchCheckout",
		`{"requests":[{"orderId":"d-b1","ttl":"1h30m"},{"orderId":"d-b2","ttl":"2500ms"},{"orderId":"d-b3","ttl":"90s"}]}`)
	results, _ := body["results"].([]any)
	if code != http.StatusOK || len(results) != 3 {
		t.Fatalf("batch checkout: %d %v", code, body)
	}
	for i, want := range []time.Duration{90 * time.Minute, 2500 * time.Millisecond, 90 * time.Second} {
		near(fmt.Sprintf("batch item %d", i), remaining(field(results[i].(map[string]any), "checkout", "order", "ttlRemaining")), want)
	}

	code, body = s.restCall(t, "POST", "/v1/orders/d-1:reschedule", `{"ttl":"2h"}`)
	if code != http.StatusOK {
		t.Fatalf("reschedule with ttl 2h: %d %v", code, body)
	}
	near("reschedule 2h", remaining(body["ttlRemaining"]), 2*time.Hour)

	code, body = s.restCall(t, "POST", "/v1/groups", `{"groupId":"g-d","ackDeadline":"1m"}`)
	if code != http.StatusOK || body["ackDeadline"] != "60s" {
		t.Fatalf("group with ackDeadline 1m: %d %v", code, body)
	}
	secret := "whsec_" + strings.Repeat("QUJD", 8)
	code, body = s.restCall(t, "POST", "/v1/groups",
		`{"groupId":"g-p","pushConfig":{"url":"http://127.0.0.1:9/hook","secret":"`+secret+`","timeout":"2500ms"}}`)
	if code != http.StatusOK || field(body, "pushConfig", "timeout") != "2.500s" {
		t.Fatalf("push group with timeout 2500ms: %d %v", code, body)
	}
	if code, body := s.restCall(t, "DELETE", "/v1/groups/g-p", ""); code != http.StatusOK {
		t.Fatalf("delete g-p: %d %v", code, body)
	}

	if code, body := s.restCall(t, "POST", "/v1/orders", `{"orderId":"d-e","ttl":"200ms"}`); code != http.StatusOK {
		t.Fatalf("checkout with ttl 200ms: %d %v", code, body)
	}
	code, body = s.restCall(t, "POST", "/v1/groups/g-d:pull", `{"maxEvents":1,"wait":"10s"}`)
	got, _ := body["receivedExpirations"].([]any)
	if code != http.StatusOK || len(got) != 1 {
		t.Fatalf("pull with wait 10s: %d %v", code, body)
	}
	ackID, _ := got[0].(map[string]any)["ackId"].(string)
	code, body = s.restCall(t, "POST", "/v1/groups/g-d:nack", `{"ackIds":["`+ackID+`"],"retryAfter":"1m"}`)
	if code != http.StatusOK || fmt.Sprint(body["results"]) != fmt.Sprintf("[map[ackId:%s status:ACK_ID_STATUS_OK]]", ackID) {
		t.Fatalf("nack with retryAfter 1m: %d %v", code, body)
	}
	// Handed back for a minute: a pull that does not wait finds nothing.
	code, body = s.restCall(t, "POST", "/v1/groups/g-d:pull", `{"wait":"0s"}`)
	if got, _ := body["receivedExpirations"].([]any); code != http.StatusOK || len(got) != 0 {
		t.Fatalf("pull after a nack of 1m: %d %v", code, body)
	}

	for _, tc := range []struct {
		name, path, body string
		mention          []string
	}{
		{"a number", "/v1/orders", `{"orderId":"d-n","ttl":5}`,
			[]string{`field "ttl": the number 5 is not a duration; write a string such as "300s", "5m", "1h30m" or "2500ms"`}},
		{"a number in a batch", "/v1/orders:batchCheckout", `{"requests":[{"orderId":"d-n","ttl":300}]}`,
			[]string{`field "requests[0].ttl": the number 300 is not a duration`}},
		{"words", "/v1/groups", `{"groupId":"g-x","ackDeadline":"a minute"}`,
			[]string{`field "ackDeadline": "a minute" is not a duration`}},
		{"ack deadline out of range", "/v1/groups", `{"groupId":"g-x","ackDeadline":"11m"}`,
			[]string{"ack_deadline 11m is out of range: give 100ms to 10m, or leave it out for 30s"}},
		{"ttl above the maximum", "/v1/orders", `{"orderId":"d-n","ttl":"200h"}`,
			[]string{"ttl 200h is more than the maximum of 168h"}},
		{"wait out of range", "/v1/groups/g-d:pull", `{"wait":"2m"}`,
			[]string{"wait 2m is out of range: give 0s to 1m, or leave it out for 10s"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := s.restCall(t, "POST", tc.path, tc.body)
			msg, _ := body["message"].(string)
			for _, m := range tc.mention {
				if code != http.StatusBadRequest || !strings.Contains(msg, m) {
					t.Fatalf("%s: %d %v, want 400 saying %q", tc.body, code, body, m)
				}
			}
		})
	}
	if code, _ := s.restCall(t, "GET", "/v1/orders/d-n", ""); code != http.StatusNotFound {
		t.Fatalf("a refused checkout wrote d-n (GET says %d)", code)
	}
}
