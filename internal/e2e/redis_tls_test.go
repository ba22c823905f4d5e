package e2e

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/orderexpiry/orderexpiry/internal/redistest"
	"github.com/orderexpiry/orderexpiry/internal/serverproc"
	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// TestRedisTLS runs the service on a redis-server that speaks only TLS and
// wants a password, through a rediss:// URL and a private CA; the password
// never shows in the logs, neither when it works nor when it is wrong.
func TestRedisTLS(t *testing.T) {
	pki := newTestPKI(t)
	const password = "redis-pa55-Qx7v"
	r := redistest.StartTLS(t, redistest.TLS{CertFile: pki.certFile, KeyFile: pki.keyFile, CAFile: pki.caFile}, "--requirepass", password)
	if !strings.HasPrefix(r.URL(), "rediss://:"+password+"@") {
		t.Fatalf("URL %q", r.URL())
	}

	t.Run("works", func(t *testing.T) {
		s := startServer(t, map[string]string{"REDIS_URL": r.URL(), "REDIS_CA_FILE": pki.caFile}, "-log-level", "debug")
		if !strings.Contains(s.Logs(), "redis_tls=true") {
			t.Fatalf("the start-up line does not say Redis is on TLS:\n%s", s.Logs())
		}
		w := s.watch(t, "")
		ctx := context.Background()
		md := map[string]string{"over": "tls"}
		if _, err := s.Client.Checkout(ctx, &pb.CheckoutRequest{OrderId: "tls-1", Ttl: ttl(200 * time.Millisecond), Metadata: md}); err != nil {
			t.Fatal(err)
		}
		ev := w.next(t, 5*time.Second)
		if ev.GetOrderId() != "tls-1" || ev.GetMetadata()["over"] != "tls" {
			t.Fatalf("event %v", ev)
		}
		o, err := s.Client.GetOrder(ctx, &pb.GetOrderRequest{OrderId: "tls-1"})
		if err != nil || o.GetStatus() != pb.OrderStatus_ORDER_STATUS_EXPIRED {
			t.Fatalf("GetOrder: %v %v", o, err)
		}
		// The subscriber enabled keyspace events over the TLS connection.
		cfg, err := r.Client(t).ConfigGet(ctx, "notify-keyspace-events").Result()
		if err != nil || !strings.ContainsAny(cfg["notify-keyspace-events"], "xA") {
			t.Fatalf("notify-keyspace-events: %v %v", cfg, err)
		}
		if strings.Contains(s.Logs(), password) {
			t.Fatalf("the logs show the Redis password:\n%s", s.Logs())
		}
	})

	// A server that cannot use Redis reports NOT_SERVING and fails calls
	// with UNAVAILABLE, without repeating the URL's password anywhere.
	for _, tc := range []struct {
		name string
		env  map[string]string
	}{
		{"wrong password", map[string]string{"REDIS_URL": strings.Replace(r.URL(), password, "not-"+password+"-x", 1), "REDIS_CA_FILE": pki.caFile}},
		{"untrusted certificate", map[string]string{"REDIS_URL": r.URL()}},
		{"plaintext to a TLS port", map[string]string{"REDIS_URL": strings.Replace(r.URL(), "rediss://", "redis://", 1)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startServerWith(t, serverOptions{Unhealthy: true}, tc.env, "-log-level", "debug")
			_, err := s.Client.Checkout(context.Background(), &pb.CheckoutRequest{OrderId: "tls-2"})
			if status.Code(err) != codes.Unavailable {
				t.Fatalf("checkout: %v, want UNAVAILABLE", err)
			}
			if strings.Contains(err.Error(), password) {
				t.Fatalf("the error repeats the password: %v", err)
			}
			h, err := healthpb.NewHealthClient(s.Conn).Check(context.Background(), &healthpb.HealthCheckRequest{})
			if err != nil || h.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
				t.Fatalf("health: %v %v", h, err)
			}
			time.Sleep(1500 * time.Millisecond) // let the subscriber and sweeper log their retries
			if logs := s.Logs(); strings.Contains(logs, password) || !strings.Contains(logs, "NOT_SERVING") {
				t.Fatalf("logs show the password or no NOT_SERVING:\n%s", logs)
			}
		})
	}

	t.Run("a bad URL is refused without repeating it", func(t *testing.T) {
		out, err := runServer(t, map[string]string{"REDIS_URL": "rediss://:" + password + "@127.0.0.1:notaport/0"})
		if err == nil {
			t.Fatal("the server started with a malformed REDIS_URL")
		}
		if strings.Contains(out, password) || !strings.Contains(out, "REDIS_URL") {
			t.Fatalf("output: %s", out)
		}
	})
}

// runServer runs the server to its end (it is expected to refuse to start)
// and returns what it printed.
func runServer(t *testing.T, env map[string]string) (string, error) {
	t.Helper()
	out, err := serverproc.Run(serverproc.Options{Binary: binary, Env: environ(env)})
	if errors.Is(err, serverproc.ErrNoExit) {
		t.Fatalf("the server did not exit:\n%s", out)
	}
	return out, err
}
