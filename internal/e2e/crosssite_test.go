package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// crossSiteCall sends a request with the given Content-Type, Origin and
// Host ("" for the defaults) and returns the status and the error message.
func crossSiteCall(t *testing.T, s *server, method, path, contentType, origin, host, auth, body string) (int, string) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, s.URL(path), r)
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	if host != "" {
		req.Host = host
	}
	if auth != "" {
		req.Header.Set("Authorization", "Bearer "+auth)
	}
	resp, err := s.HTTP.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var e struct {
		Message string `json:"message"`
	}
	_ = json.Unmarshal(raw, &e)
	return resp.StatusCode, e.Message
}

// orderExists says whether an order was created, asked over gRPC.
func orderExists(t *testing.T, s *server, id string) bool {
	t.Helper()
	_, err := s.Client.GetOrder(context.Background(), &pb.GetOrderRequest{OrderId: id})
	if status.Code(err) == codes.NotFound {
		return false
	}
	if err != nil {
		t.Fatal(err)
	}
	return true
}

// TestHostileCrossSite: with no bearer token set, what a web page on
// another site can send (text/plain, form and typeless bodies, which need
// no CORS preflight; a foreign Origin; a foreign Host after DNS
// rebinding) creates nothing; same-origin JSON calls, /healthz and the
// flags' allowed origins and hosts still work; with tokens set the Origin
// and Host checks are off.
func TestHostileCrossSite(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil, "-allow-origins", "https://app.example.com", "-allow-hosts", "orderexpiry.internal")
	self := "http://" + s.HTTPAddr
	_, port, _ := strings.Cut(s.HTTPAddr, ":")
	body := func(id string) string { return `{"orderId":"` + id + `","ttl":"60s"}` }
	for _, tc := range []struct {
		name, contentType, origin, host string
		want                            int
		says                            string
	}{
		{"text/plain", "text/plain;charset=UTF-8", "", "", http.StatusUnsupportedMediaType, "application/json"},
		{"form", "application/x-www-form-urlencoded", "", "", http.StatusUnsupportedMediaType, "application/json"},
		{"multipart", "multipart/form-data; boundary=x", "", "", http.StatusUnsupportedMediaType, "application/json"},
		{"no type", "", "", "", http.StatusUnsupportedMediaType, "application/json"},
		{"foreign origin", "application/json", "http://evil.example", "", http.StatusForbidden, "-allow-origins"},
		{"null origin", "application/json", "null", "", http.StatusForbidden, "-allow-origins"},
		{"other port", "application/json", "http://127.0.0.1:1", "", http.StatusForbidden, "-allow-origins"},
		{"rebound host", "application/json", "", "rebind.example:" + port, http.StatusForbidden, "-allow-hosts"},
		{"rebound host and origin", "application/json", "http://rebind.example:" + port, "rebind.example:" + port, http.StatusForbidden, "-allow-hosts"},
		{"same origin", "application/json", self, "", http.StatusOK, ""},
		{"json with charset", "application/json; charset=utf-8", "", "", http.StatusOK, ""},
		{"localhost", "application/json", "http://localhost:" + port, "localhost:" + port, http.StatusOK, ""},
		{"allowed origin", "application/json", "https://app.example.com", "", http.StatusOK, ""},
		{"allowed host", "application/json", "", "orderexpiry.internal:" + port, http.StatusOK, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := "xs-" + strings.NewReplacer(" ", "-", "/", "-").Replace(tc.name)
			code, msg := crossSiteCall(t, s, "POST", "/v1/orders", tc.contentType, tc.origin, tc.host, "", body(id))
			if code != tc.want || !strings.Contains(msg, tc.says) {
				t.Errorf("POST /v1/orders (Content-Type %q, Origin %q, Host %q): %d %q; want %d naming %q", tc.contentType, tc.origin, tc.host, code, msg, tc.want, tc.says)
			}
			if created := orderExists(t, s, id); created != (tc.want == http.StatusOK) {
				t.Errorf("order created: %v, want %v", created, tc.want == http.StatusOK)
			}
		})
	}
	// A rebound page cannot read either.
	if code, msg := crossSiteCall(t, s, "GET", "/v1/orders/xs-same-origin", "", "", "rebind.example:"+port, "", ""); code != http.StatusForbidden {
		t.Errorf("GET under a rebound Host: %d %q, want 403", code, msg)
	}
	if code, _ := crossSiteCall(t, s, "GET", "/healthz", "", "", "rebind.example:"+port, "", ""); code != http.StatusOK {
		t.Errorf("/healthz under another Host: %d, want 200", code)
	}

	t.Run("tokens set", func(t *testing.T) {
		s := startServerWith(t, serverOptions{Token: tokenA}, map[string]string{"AUTH_TOKENS": tokenA})
		if code, msg := crossSiteCall(t, s, "POST", "/v1/orders", "application/json", "http://evil.example", "rebind.example:"+port, tokenA, body("xs-token")); code != http.StatusOK {
			t.Errorf("with a token, a foreign Origin and Host: %d %q; want 200 (the token is the check)", code, msg)
		}
		if code, _ := crossSiteCall(t, s, "POST", "/v1/orders", "text/plain", "", "", tokenA, body("xs-token-plain")); code != http.StatusUnsupportedMediaType {
			t.Errorf("with a token, a text/plain body: %d; want 415", code)
		}
	})
}

// TestBrowserCrossSite: a page on another origin, in Chromium, tries the
// writes a browser lets any page make without a preflight (no-cors fetches
// with text/plain and typeless bodies, and a form post) against the
// service on loopback with no token set; none creates an order.
func TestBrowserCrossSite(t *testing.T) {
	chromium := chromiumPath(t)
	s := startServer(t, nil)
	target := "http://" + s.HTTPAddr + "/v1/orders"
	done := make(chan string, 1)
	page := `<!doctype html><html><body>
<form id="f" method="POST" action="` + target + `" enctype="text/plain" target="sink">
<input name='{"orderId":"csrf-form","ttl":"60s","metadata":{"x":"' value='"}}'></form>
<iframe name="sink"></iframe>
<script>
(async () => {
  const body = JSON.stringify({orderId: "csrf-plain", ttl: "60s"});
  try { await fetch(` + "`" + target + "`" + `, {method: "POST", mode: "no-cors", body}); } catch (e) {}
  try { await fetch(` + "`" + target + "`" + `, {method: "POST", mode: "no-cors", body: new Blob([JSON.stringify({orderId: "csrf-blob", ttl: "60s"})])}); } catch (e) {}
  document.getElementById("f").submit();
  setTimeout(() => fetch("/done", {method: "POST"}), 1500);
})();
</script></body></html>`
	attacker := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/done" {
			select {
			case done <- "done":
			default:
			}
			return
		}
		w.Header().Set("Content-Type", "text/html")
		_, _ = fmt.Fprint(w, page)
	}))
	t.Cleanup(attacker.Close)
	startChromium(t, chromium, attacker.URL+"/")
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("the attacker's page did not finish within 60s")
	}
	for _, id := range []string{"csrf-plain", "csrf-blob", "csrf-form"} {
		if orderExists(t, s, id) {
			t.Errorf("a page on another origin created order %s", id)
		}
	}
}
