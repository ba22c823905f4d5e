package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	rpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// The tokens of the authentication tests; none of them may ever appear in
// the server's logs.
const (
	tokenA      = "tok-A-3f9c1e7d2b64a0c8"
	tokenB      = "tok-B-8a6d4c2e0f1357ac"
	tokenWrong  = "tok-WRONG-5e1b7a9d0c2f"
	tokenRevoke = "tok-REVOKED-77c0ffee11d4"
)

// challenge is the WWW-Authenticate header of every 401.
const challenge = `Bearer realm="orderexpiry"`

// TestAuthTokens: with bearer tokens set, every RPC needs one, through the
// gRPC port and through the gateway; health, /metrics and /openapi.json
// are open by default and closed with -auth-open=; reflection opens only
// when named; and no token, right or wrong, is ever logged.
func TestAuthTokens(t *testing.T) {
	t.Parallel()

	t.Run("AUTH_TOKENS, text logs", func(t *testing.T) {
		t.Parallel()
		s := startServerWith(t, serverOptions{Token: tokenA}, map[string]string{"AUTH_TOKENS": tokenA}, "-log-level", "debug")
		checkTokensGRPC(t, s, []string{tokenA}, []string{tokenWrong, tokenB})
		checkTokensREST(t, s, []string{tokenA}, []string{tokenWrong, tokenB})
		checkWatchAuth(t, s, tokenA)
		checkOpen(t, s, map[string]bool{"health": true, "metrics": true, "openapi": true, "reflection": false})
		checkLogsClean(t, s, false)
	})

	t.Run("token file, JSON logs", func(t *testing.T) {
		t.Parallel()
		file := filepath.Join(t.TempDir(), "tokens")
		content := "# bearer tokens of orderexpiry, one a line\n\n" +
			tokenA + "\n" +
			"   # " + tokenRevoke + " (revoked: a comment)\n" +
			"  " + tokenB + "  \n"
		if err := os.WriteFile(file, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		s := startServerWith(t, serverOptions{Token: tokenB}, nil,
			"-auth-tokens-file", file, "-log-level", "debug", "-log-format", "json")
		checkTokensGRPC(t, s, []string{tokenA, tokenB}, []string{tokenWrong, tokenRevoke, "#"})
		checkTokensREST(t, s, []string{tokenA, tokenB}, []string{tokenWrong, tokenRevoke})
		checkWatchAuth(t, s, tokenB)
		checkLogsClean(t, s, true)
	})

	t.Run("-auth-open=health,reflection", func(t *testing.T) {
		t.Parallel()
		s := startServerWith(t, serverOptions{Token: tokenA}, map[string]string{"AUTH_TOKENS": tokenA},
			"-auth-open=health,reflection")
		checkOpen(t, s, map[string]bool{"health": true, "reflection": true, "metrics": false, "openapi": false})
		// Opening health and reflection opens nothing else.
		_, err := pb.NewOrderServiceClient(dialServer(t, s.GRPCAddr, nil, "")).GetOrder(context.Background(), &pb.GetOrderRequest{OrderId: "x"})
		wantCode(t, err, codes.Unauthenticated)
	})

	t.Run("-auth-open= (nothing open)", func(t *testing.T) {
		t.Parallel()
		// The harness waits for /healthz with the token.
		s := startServerWith(t, serverOptions{Token: tokenA}, map[string]string{"AUTH_TOKENS": tokenA}, "-auth-open=")
		checkOpen(t, s, map[string]bool{"health": false, "reflection": false, "metrics": false, "openapi": false})
	})
}

// authCases are the authorization headers a gRPC or REST call may
// carry, with whether they must be let in.
func authCases(accepted, refused []string) []struct {
	name, header string
	ok           bool
} {
	cases := []struct {
		name, header string
		ok           bool
	}{
		{"no header", "", false},
		{"empty bearer", "Bearer ", false},
		{"scheme only", "Bearer", false},
		{"basic scheme with the token", "Basic " + accepted[0], false},
		{"basic credentials", "Basic " + base64.StdEncoding.EncodeToString([]byte("user:"+accepted[0])), false},
		{"token without a scheme", accepted[0], false},
		{"token with a suffix", "Bearer " + accepted[0] + "x", false},
		{"token prefix", "Bearer " + accepted[0][:len(accepted[0])-1], false},
		{"lower-case scheme", "bearer " + accepted[0], true}, // RFC 7235: the scheme is case-insensitive
	}
	for i, tok := range accepted {
		cases = append(cases, struct {
			name, header string
			ok           bool
		}{"accepted token " + string(rune('A'+i)), "Bearer " + tok, true})
	}
	for i, tok := range refused {
		cases = append(cases, struct {
			name, header string
			ok           bool
		}{"refused token " + string(rune('A'+i)), "Bearer " + tok, false})
	}
	return cases
}

// caseID turns a case name into an order id.
func caseID(prefix, name string) string {
	return prefix + strings.NewReplacer(" ", "-", ",", "", "=", "", "(", "", ")", "").Replace(name)
}

// checkTokensGRPC: Checkout through the gRPC port is let in with an accepted
// token only; a refused call gets UNAUTHENTICATED, writes nothing and does
// not echo the token.
func checkTokensGRPC(t *testing.T, s *server, accepted, refused []string) {
	t.Helper()
	bare := pb.NewOrderServiceClient(dialServer(t, s.GRPCAddr, nil, ""))
	for _, tc := range authCases(accepted, refused) {
		t.Run("gRPC "+tc.name, func(t *testing.T) {
			ctx := context.Background()
			if tc.header != "" {
				ctx = metadata.AppendToOutgoingContext(ctx, "authorization", tc.header)
			}
			id := caseID("grpc-auth-", tc.name)
			res, err := bare.Checkout(ctx, &pb.CheckoutRequest{OrderId: id})
			if tc.ok {
				if err != nil || !res.GetCreated() {
					t.Fatalf("checkout with %q: %v, %v", tc.header, res, err)
				}
				return
			}
			wantCode(t, err, codes.Unauthenticated)
			for _, tok := range append(accepted, refused...) {
				if strings.Contains(status.Convert(err).Message(), tok) {
					t.Fatalf("the error echoes a token: %v", err)
				}
			}
			_, err = s.Client.GetOrder(context.Background(), &pb.GetOrderRequest{OrderId: id})
			wantCode(t, err, codes.NotFound)
		})
	}
}

// checkTokensREST: the same through the gateway; a refused call gets 401
// with the challenge and a JSON error body.
func checkTokensREST(t *testing.T, s *server, accepted, refused []string) {
	t.Helper()
	for _, tc := range authCases(accepted, refused) {
		t.Run("REST "+tc.name, func(t *testing.T) {
			id := caseID("rest-auth-", tc.name)
			code, h, body := httpCall(t, s.HTTP, "POST", s.URL("/v1/orders"), tc.header, `{"orderId":"`+id+`","ttl":"60s"}`)
			if tc.ok {
				if code != 200 {
					t.Fatalf("checkout with %q: %d %s", tc.header, code, body)
				}
				if code, _, body := httpCall(t, s.HTTP, "GET", s.URL("/v1/orders/"+id), tc.header, ""); code != 200 {
					t.Fatalf("get with %q: %d %s", tc.header, code, body)
				}
				return
			}
			want401(t, code, h, body, append(accepted, refused...))
			if code, _, body := httpCall(t, s.HTTP, "GET", s.URL("/v1/orders/"+id), tc.header, ""); code != 401 {
				t.Fatalf("get with %q: %d %s, want 401", tc.header, code, body)
			}
			if code, body := s.restCall(t, "GET", "/v1/orders/"+id, ""); code != 404 {
				t.Fatalf("a refused checkout wrote %s: %d %v", id, code, body)
			}
		})
	}
}

// want401 checks a refusal: 401, the challenge, a JSON body with code 16
// (UNAUTHENTICATED) and a message that echoes no token.
func want401(t *testing.T, code int, h http.Header, body []byte, tokens []string) {
	t.Helper()
	var e struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	}
	if code != 401 || h.Get("WWW-Authenticate") != challenge || h.Get("Content-Type") != "application/json" ||
		json.Unmarshal(body, &e) != nil || e.Code != int(codes.Unauthenticated) || e.Message == "" {
		t.Fatalf("got %d, WWW-Authenticate %q, Content-Type %q, body %s; want 401, %q, a JSON error with code 16",
			code, h.Get("WWW-Authenticate"), h.Get("Content-Type"), body, challenge)
	}
	for _, tok := range tokens {
		if strings.Contains(string(body), tok) || strings.Contains(h.Get("WWW-Authenticate"), tok) {
			t.Fatalf("the refusal echoes a token: %s", body)
		}
	}
}

// checkWatchAuth: a watch needs the token, over gRPC and over REST; with
// it, events arrive.
func checkWatchAuth(t *testing.T, s *server, token string) {
	t.Helper()
	t.Run("watch", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		stream, err := pb.NewOrderServiceClient(dialServer(t, s.GRPCAddr, nil, "")).WatchExpirations(ctx, &pb.WatchExpirationsRequest{})
		if err == nil {
			_, err = stream.Recv()
		}
		wantCode(t, err, codes.Unauthenticated)
		for _, header := range []string{"", "Bearer " + tokenWrong} {
			code, h, body, _ := openNDJSON(t, s.HTTP, s.URL("/v1/expirations:watch"), header)
			want401(t, code, h, body, []string{token, tokenWrong})
		}

		grpcWatch := s.watch(t, "") // s.Client has the token
		code, _, body, lines := openNDJSON(t, s.HTTP, s.URL("/v1/expirations:watch"), "Bearer "+token)
		if code != 200 {
			t.Fatalf("watch with the token: %d %s", code, body)
		}
		if _, err := s.Client.Checkout(context.Background(), &pb.CheckoutRequest{OrderId: "auth-watch", Ttl: ttl(100 * time.Millisecond)}); err != nil {
			t.Fatal(err)
		}
		if ev := grpcWatch.next(t, 5*time.Second); ev.GetOrderId() != "auth-watch" {
			t.Fatalf("gRPC event %v", ev)
		}
		if l := lines.next(t); l["orderId"] != "auth-watch" {
			t.Fatalf("REST line %v", l)
		}
	})
}

// checkOpen checks what is reachable without a token: gRPC health,
// reflection, /healthz, /metrics, /openapi.json; and that each is reachable
// with one.
func checkOpen(t *testing.T, s *server, open map[string]bool) {
	t.Helper()
	bare := dialServer(t, s.GRPCAddr, nil, "")
	t.Run("gRPC health", func(t *testing.T) {
		for _, c := range []struct {
			conn *grpc.ClientConn
			ok   bool
		}{{bare, open["health"]}, {s.Conn, true}} {
			h, err := healthpb.NewHealthClient(c.conn).Check(context.Background(), &healthpb.HealthCheckRequest{})
			if !c.ok {
				wantCode(t, err, codes.Unauthenticated)
			} else if err != nil || h.GetStatus() != healthpb.HealthCheckResponse_SERVING {
				t.Fatalf("health: %v %v", h, err)
			}
		}
	})
	t.Run("reflection", func(t *testing.T) {
		for _, c := range []struct {
			conn *grpc.ClientConn
			ok   bool
		}{{bare, open["reflection"]}, {s.Conn, true}} {
			names, err := listServices(c.conn)
			if !c.ok {
				wantCode(t, err, codes.Unauthenticated)
			} else if err != nil || !slices.Contains(names, "orderexpiry.v1.OrderService") {
				t.Fatalf("reflection: %v %v", names, err)
			}
		}
	})
	for _, route := range []struct{ name, path string }{{"health", "/healthz"}, {"health", "/livez"}, {"metrics", "/metrics"}, {"openapi", "/openapi.json"}} {
		name, path := route.name, route.path
		t.Run(path, func(t *testing.T) {
			code, h, body := httpCall(t, s.HTTP, "GET", s.URL(path), "", "")
			if open[name] {
				if code != 200 {
					t.Fatalf("without a token: %d %s, want 200", code, body)
				}
			} else {
				want401(t, code, h, body, []string{tokenA})
				code, h, body = httpCall(t, s.HTTP, "GET", s.URL(path), "Bearer "+tokenWrong, "")
				want401(t, code, h, body, []string{tokenA, tokenWrong})
			}
			if code, _, body := httpCall(t, s.HTTP, "GET", s.URL(path), "Bearer "+s.opts.Token, ""); code != 200 {
				t.Fatalf("with the token: %d %s, want 200", code, body)
			}
		})
	}
}

// checkLogsClean stops the server (so that its log is complete) and checks
// that the log has a line for a refused call, holds no token, and, for
// JSON, is one JSON object a line.
func checkLogsClean(t *testing.T, s *server, jsonLines bool) {
	t.Helper()
	if !s.Stop(syscall.SIGTERM) {
		t.Fatal("the server did not stop")
	}
	logs := s.Logs()
	if !strings.Contains(logs, "Unauthenticated") {
		t.Fatalf("the debug log has no line for a refused call:\n%s", logs)
	}
	for _, tok := range []string{tokenA, tokenB, tokenWrong, tokenRevoke, base64.StdEncoding.EncodeToString([]byte("user:" + tokenA))} {
		if strings.Contains(logs, tok) {
			t.Fatalf("the log holds the token %q:\n%s", tok, logs)
		}
	}
	if jsonLines {
		checkJSONLines(t, logs)
	}
}

// checkJSONLines checks that every line of a log is one JSON object with a
// level and a message.
func checkJSONLines(t *testing.T, logs string) {
	t.Helper()
	n := 0
	for line := range strings.SplitSeq(strings.TrimSuffix(logs, "\n"), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil || m["level"] == nil || m["msg"] == nil {
			t.Fatalf("log line %d is not a JSON object with level and msg (%v): %q", n+1, err, line)
		}
		n++
	}
	if n < 3 {
		t.Fatalf("only %d log lines", n)
	}
}

// httpCall makes a request with the Authorization header auth ("" for
// none) and returns the status, the headers and the body.
func httpCall(t *testing.T, client *http.Client, method, url, auth, body string) (int, http.Header, []byte) {
	t.Helper()
	code, h, b, err := tryHTTP(client, method, url, auth, body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	return code, h, b
}

func tryHTTP(client *http.Client, method, url, auth, body string) (int, http.Header, []byte, error) {
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, r)
	if err != nil {
		return 0, nil, nil, err
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b, err
}

// openNDJSON opens a REST watch with the Authorization header auth. For a
// 200 it returns the lines as they come; for another status, the body.
func openNDJSON(t *testing.T, client *http.Client, url, auth string) (int, http.Header, []byte, *ndjson) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("watch: %v", err)
	}
	if resp.StatusCode != 200 {
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, b, nil
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/x-ndjson" {
		t.Fatalf("watch: Content-Type %q", ct)
	}
	return resp.StatusCode, resp.Header, nil, readNDJSON(resp.Body, cancel)
}

// listServices asks the reflection service for the services it knows.
func listServices(conn *grpc.ClientConn) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	stream, err := rpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		return nil, err
	}
	// A Send that finds the stream already ended by the server (a call
	// refused without a token) returns io.EOF, and the status is Recv's
	// (grpc.ClientStream's SendMsg): failed once in CI as "Unknown (EOF)".
	if err := stream.Send(&rpb.ServerReflectionRequest{MessageRequest: &rpb.ServerReflectionRequest_ListServices{}}); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	resp, err := stream.Recv()
	if err != nil {
		return nil, err
	}
	var names []string
	for _, svc := range resp.GetListServicesResponse().GetService() {
		names = append(names, svc.GetName())
	}
	sort.Strings(names)
	return names, nil
}

// testPKI is a CA, a server certificate it signed for 127.0.0.1 and
// localhost, a client certificate it signed, and a client certificate
// nobody trusts, made for one test.
type testPKI struct {
	caFile, certFile, keyFile string
	roots                     *x509.CertPool
	client, stranger          tls.Certificate
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	dir := t.TempDir()
	ca, caKey := newCert(t, &x509.Certificate{
		Subject:               pkix.Name{CommonName: "orderexpiry test CA"},
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}, nil, nil)
	srv, srvKey := newCert(t, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "orderexpiry"},
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, ca, caKey)
	clientTemplate := func(cn string) *x509.Certificate {
		return &x509.Certificate{
			Subject:     pkix.Name{CommonName: cn},
			KeyUsage:    x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}
	}
	client, clientKey := newCert(t, clientTemplate("checkout-frontend"), ca, caKey)
	stranger, strangerKey := newCert(t, clientTemplate("stranger"), nil, nil) // self-signed

	p := &testPKI{
		caFile:   filepath.Join(dir, "ca.pem"),
		certFile: filepath.Join(dir, "server.pem"),
		keyFile:  filepath.Join(dir, "server-key.pem"),
		roots:    x509.NewCertPool(),
	}
	p.roots.AddCert(ca)
	writePEM(t, p.caFile, "CERTIFICATE", ca.Raw)
	writePEM(t, p.certFile, "CERTIFICATE", srv.Raw)
	writePEM(t, p.keyFile, "PRIVATE KEY", marshalKey(t, srvKey))
	p.client = tls.Certificate{Certificate: [][]byte{client.Raw}, PrivateKey: clientKey}
	p.stranger = tls.Certificate{Certificate: [][]byte{stranger.Raw}, PrivateKey: strangerKey}
	return p
}

// newCert makes a certificate from the template, signed by parent (itself
// when parent is nil).
func newCert(t *testing.T, tmpl *x509.Certificate, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(24 * time.Hour)
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

func marshalKey(t *testing.T, key *ecdsa.PrivateKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func writePEM(t *testing.T, file, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestTLS: with -tls-cert and -tls-key both ports serve TLS only; with
// -tls-client-ca both also want a client certificate the CA signed.
func TestTLS(t *testing.T) {
	t.Parallel()
	pki := newTestPKI(t)
	tlsFlags := []string{"-tls-cert", pki.certFile, "-tls-key", pki.keyFile}

	t.Run("server certificate", func(t *testing.T) {
		t.Parallel()
		s := startServerWith(t, serverOptions{TLS: &tls.Config{RootCAs: pki.roots}}, nil, tlsFlags...)
		ctx := context.Background()
		w := s.watch(t, "")
		code, _, body, lines := openNDJSON(t, s.HTTP, s.URL("/v1/expirations:watch"), "")
		if code != 200 {
			t.Fatalf("REST watch over https: %d %s", code, body)
		}
		res, err := s.Client.Checkout(ctx, &pb.CheckoutRequest{OrderId: "tls-grpc", Ttl: ttl(150 * time.Millisecond)})
		if err != nil || !res.GetCreated() {
			t.Fatalf("checkout over TLS: %v %v", res, err)
		}
		if code, body := s.restCall(t, "POST", "/v1/orders", `{"orderId":"tls-rest","ttl":"60s"}`); code != 200 || body["created"] != true {
			t.Fatalf("REST checkout over https: %d %v", code, body)
		}
		if code, body := s.restCall(t, "GET", "/v1/orders/tls-rest", ""); code != 200 || body["status"] != "ORDER_STATUS_PENDING" {
			t.Fatalf("REST get over https: %d %v", code, body)
		}
		if ev := w.next(t, 5*time.Second); ev.GetOrderId() != "tls-grpc" {
			t.Fatalf("gRPC event over TLS: %v", ev)
		}
		if l := lines.next(t); l["orderId"] != "tls-grpc" {
			t.Fatalf("REST event over https: %v", l)
		}
		if code, body := s.restCall(t, "GET", "/healthz", ""); code != 200 || body["status"] != "SERVING" {
			t.Fatalf("healthz over https: %d %v", code, body)
		}

		refusedGRPC(t, s, "plaintext", nil, "tls-plain")
		refusedGRPC(t, s, "TLS without the CA", &tls.Config{}, "tls-untrusted")
		// Plain HTTP to the TLS port is answered 400 by net/http, never
		// served.
		if code, _, body, err := tryHTTP(http.DefaultClient, "GET", "http://"+s.HTTPAddr+"/healthz", "", ""); err == nil && code != 400 {
			t.Fatalf("plain HTTP to the TLS port: %d %s", code, body)
		}
		untrusted := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{}}}
		if _, _, _, err := tryHTTP(untrusted, "GET", s.URL("/healthz"), "", ""); err == nil {
			t.Fatal("https without the CA: the server's certificate was accepted")
		}
	})

	t.Run("mutual TLS", func(t *testing.T) {
		t.Parallel()
		withCert := &tls.Config{RootCAs: pki.roots, Certificates: []tls.Certificate{pki.client}}
		s := startServerWith(t, serverOptions{TLS: withCert}, nil,
			append(tlsFlags, "-tls-client-ca", pki.caFile, "-log-format", "json")...)
		ctx := context.Background()
		w := s.watch(t, "")
		if _, err := s.Client.Checkout(ctx, &pb.CheckoutRequest{OrderId: "mtls-grpc", Ttl: ttl(100 * time.Millisecond)}); err != nil {
			t.Fatalf("checkout with a client certificate: %v", err)
		}
		if ev := w.next(t, 5*time.Second); ev.GetOrderId() != "mtls-grpc" {
			t.Fatalf("event %v", ev)
		}
		if code, body := s.restCall(t, "POST", "/v1/orders", `{"orderId":"mtls-rest","ttl":"60s"}`); code != 200 {
			t.Fatalf("REST checkout with a client certificate: %d %v", code, body)
		}
		if code, body := s.restCall(t, "GET", "/healthz", ""); code != 200 {
			t.Fatalf("healthz with a client certificate: %d %v", code, body)
		}

		for name, cfg := range map[string]*tls.Config{
			"no client certificate": {RootCAs: pki.roots},
			// Sent whatever CAs the server names (Go's client would
			// otherwise send no certificate at all).
			"a certificate the CA did not sign": {RootCAs: pki.roots, GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
				return &pki.stranger, nil
			}},
		} {
			t.Run(name, func(t *testing.T) {
				refusedGRPC(t, s, name, cfg, "mtls-"+strings.ReplaceAll(name, " ", "-"))
				client := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}
				defer client.CloseIdleConnections()
				for _, path := range []string{"/healthz", "/v1/orders/mtls-rest"} {
					if code, _, body, err := tryHTTP(client, "GET", s.URL(path), "", ""); err == nil {
						t.Fatalf("https GET %s with %s: %d %s, want the handshake refused", path, name, code, body)
					}
				}
				if code, _, body, err := tryHTTP(client, "POST", s.URL("/v1/orders"), "", `{"orderId":"mtls-refused"}`); err == nil {
					t.Fatalf("https checkout with %s: %d %s", name, code, body)
				}
			})
		}
		if code, body := s.restCall(t, "GET", "/v1/orders/mtls-refused", ""); code != 404 {
			t.Fatalf("a refused client wrote an order: %d %v", code, body)
		}

		// Refused handshakes are logged, and in the format asked for.
		if !s.Stop(syscall.SIGTERM) {
			t.Fatal("the server did not stop")
		}
		checkJSONLines(t, s.Logs())
	})
}

// refusedGRPC checks that a gRPC client with the TLS configuration cfg
// (nil: plaintext) cannot call the server, and that its checkout of id
// wrote nothing.
func refusedGRPC(t *testing.T, s *server, name string, cfg *tls.Config, id string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	client := pb.NewOrderServiceClient(dialServer(t, s.GRPCAddr, cfg, ""))
	if res, err := client.Checkout(ctx, &pb.CheckoutRequest{OrderId: id}); err == nil {
		t.Fatalf("gRPC with %s: checkout succeeded: %v", name, res)
	} else if c := status.Code(err); c != codes.Unavailable {
		t.Fatalf("gRPC with %s: %v, want UNAVAILABLE (the handshake refused)", name, err)
	}
	stream, err := client.WatchExpirations(ctx, &pb.WatchExpirationsRequest{})
	if err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("gRPC watch with %s: %v, want UNAVAILABLE", name, err)
	}
	_, err = s.Client.GetOrder(context.Background(), &pb.GetOrderRequest{OrderId: id})
	wantCode(t, err, codes.NotFound)
}
