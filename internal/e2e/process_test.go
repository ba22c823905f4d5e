package e2e

import (
	"context"
	"errors"
	"net"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/orderexpiry/orderexpiry/internal/redistest"
	"github.com/orderexpiry/orderexpiry/internal/serverproc"
	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// The tests of what only the binary shows: its serving line, its exit code
// and its output when it refuses to start, its stop on SIGINT and its
// garbage collector's setting.
// TestGracefulStop covers SIGTERM.

// TestProcessServingLine: in both log formats the binary's serving line
// names the ports it serves, which serverproc (and so the benchmarks) reads
// them from.
func TestProcessServingLine(t *testing.T) {
	for _, format := range []string{"text", "json"} {
		t.Run(format, func(t *testing.T) {
			s := startProcess(t, nil, "-log-format", format)
			// /healthz answered on the HTTP port; a call answers on the
			// gRPC one.
			_, err := s.Client.GetOrder(context.Background(), &pb.GetOrderRequest{OrderId: "none"})
			wantCode(t, err, codes.NotFound)
		})
	}
}

// TestProcessGCPercent: on Redis the binary runs its garbage collector at
// GOGC=200 (cmd/server's gcPercentOnRedis), on the memory store at Go's
// default, and a GOGC in the environment wins; /metrics says which
// (go_gc_gogc_percent).
func TestProcessGCPercent(t *testing.T) {
	r := redistest.Start(t)
	// An empty GOGC is Go's default, as an unset one is: the cases that
	// want it unset do not inherit the GOGC of whoever runs the tests.
	for _, tc := range []struct {
		name string
		env  map[string]string
		want int
	}{
		{"memory store", map[string]string{"GOGC": ""}, 100},
		{"redis", map[string]string{"REDIS_URL": r.URL(), "GOGC": ""}, 200},
		{"redis, GOGC set", map[string]string{"REDIS_URL": r.URL(), "GOGC": "300"}, 300},
		{"memory store, GOGC set", map[string]string{"GOGC": "50"}, 50},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := startProcess(t, tc.env).gauge(t, "go_gc_gogc_percent"); got != tc.want {
				t.Fatalf("/metrics says go_gc_gogc_percent %d, want %d", got, tc.want)
			}
		})
	}
}

// TestProcessRefusesToStart: a bad flag, a bad variable or a port in use
// ends the binary with exit code 1 and a message that names the culprit.
func TestProcessRefusesToStart(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	for _, tc := range []struct {
		name  string
		env   map[string]string
		flags []string
		want  string
	}{
		{"bad flag", nil, []string{"-max-ttl=soon"}, `invalid value "soon" for flag -max-ttl`},
		{"unknown flag", nil, []string{"-verbose"}, "-grpc-addr"}, // the usage
		{"bad variable", map[string]string{"MAX_WATCHERS": "lots"}, nil, `MAX_WATCHERS="lots": not a whole number`},
		{"port in use", nil, []string{"-http-addr", taken.Addr().String()}, "HTTP listener"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := serverproc.Run(serverproc.Options{Binary: binary, Env: environ(serverEnv(tc.env)), Flags: tc.flags})
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 1 {
				t.Fatalf("the server ended with %v, want exit code 1; its output:\n%s", err, out)
			}
			if !strings.Contains(out, tc.want) {
				t.Fatalf("the output does not say %q:\n%s", tc.want, out)
			}
		})
	}
}

// TestProcessStopsOnSIGINT: SIGINT (Ctrl-C) stops the binary as SIGTERM
// does, with exit code 0.
func TestProcessStopsOnSIGINT(t *testing.T) {
	s := startProcess(t, nil)
	if !s.Stop(syscall.SIGINT) {
		t.Fatal("the server did not stop within 15s of SIGINT")
	}
	if code := s.ExitCode(); code != 0 {
		t.Fatalf("exit code %d after SIGINT, want 0", code)
	}
	if !strings.Contains(s.Logs(), "msg=stopped") {
		t.Fatalf("the log does not end with the stop:\n%s", s.Logs())
	}
}
