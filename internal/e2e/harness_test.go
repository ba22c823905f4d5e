package e2e

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/orderexpiry/orderexpiry/internal/serverproc"
	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// binary is the server built once for all tests.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "orderexpiry-e2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "orderexpiry")
	args := []string{"build", "-o", binary}
	if raceEnabled {
		args = append(args, "-race")
	}
	build := exec.Command("go", append(args, "github.com/orderexpiry/orderexpiry/cmd/server")...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building the server:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// server is one running server: in this process (the default), or the
// built binary as a child process (serverOptions.Process).
type server struct {
	t *testing.T
	// One of proc and local is set.
	proc     *serverproc.Process
	local    *inProcess
	GRPCAddr string
	HTTPAddr string
	// DebugAddr serves /debug/pprof/ when the server was started with
	// -debug-addr.
	DebugAddr string
	Client    pb.OrderServiceClient
	Conn      *grpc.ClientConn
	// HTTP is the client of the HTTP port: http.DefaultClient, or one
	// with the TLS configuration of serverOptions.
	HTTP *http.Client

	opts serverOptions
}

// serverOptions say how the harness reaches a server that serves TLS or
// wants a bearer token; the zero value is a plain server with
// authentication off.
type serverOptions struct {
	// TLS, when set, is the client side of both ports: gRPC over TLS and
	// https (a client certificate for mutual TLS goes in it too).
	TLS *tls.Config
	// Token, when set, is sent as a bearer token by the harness's own
	// calls: s.Client, the wait for health and restCall.
	Token string
	// Unhealthy: do not wait for the server to report SERVING (it is
	// started against a store it cannot use).
	Unhealthy bool
	// Process runs the built binary as a child process rather than the
	// server in this process, for what only a process shows: a signal, a
	// kill, an exit code, the serving line it prints, its command line,
	// and its PID, descriptors, memory and goroutines, which in this
	// process would be shared with the tests and every other server.
	Process bool
}

// startServer starts the server on free ports with the given environment
// (REDIS_URL and the like) and extra flags, and stops it when the test ends.
// It runs in this process; startProcess runs the binary.
func startServer(t *testing.T, env map[string]string, flags ...string) *server {
	t.Helper()
	return startServerWith(t, serverOptions{}, env, flags...)
}

// startProcess is startServer for the built binary, run as a child
// process.
func startProcess(t *testing.T, env map[string]string, flags ...string) *server {
	t.Helper()
	return startServerWith(t, serverOptions{Process: true}, env, flags...)
}

// startServerWith is startServer for a server that the harness reaches
// with the credentials of opts, and runs as opts says.
func startServerWith(t *testing.T, opts serverOptions, env map[string]string, flags ...string) *server {
	t.Helper()
	s := &server{t: t, opts: opts, HTTP: http.DefaultClient}
	if opts.Process {
		proc, err := serverproc.Start(serverproc.Options{Binary: binary, Env: environ(serverEnv(env)), Flags: flags})
		if err != nil {
			t.Fatal(err)
		}
		s.proc, s.GRPCAddr, s.HTTPAddr, s.DebugAddr = proc, proc.GRPCAddr, proc.HTTPAddr, proc.DebugAddr
	} else {
		local, err := startInProcess(env, flags)
		if err != nil {
			t.Fatal(err)
		}
		s.local, s.GRPCAddr, s.HTTPAddr, s.DebugAddr = local, local.GRPCAddr, local.HTTPAddr, local.DebugAddr
	}
	t.Cleanup(func() {
		if s.proc != nil {
			s.proc.Stop(syscall.SIGKILL)
		} else if !s.local.Stop() {
			t.Errorf("the server did not stop within %s of the end of its context", inProcessStopTimeout)
		}
		if t.Failed() {
			t.Logf("server log:\n%s", s.Logs())
		}
	})
	if opts.TLS != nil {
		tr := &http.Transport{TLSClientConfig: opts.TLS.Clone()}
		s.HTTP = &http.Client{Transport: tr}
		t.Cleanup(tr.CloseIdleConnections)
	}
	conn := dialServer(t, s.GRPCAddr, opts.TLS, opts.Token)
	s.Conn = conn
	s.Client = pb.NewOrderServiceClient(conn)
	if !opts.Unhealthy {
		s.waitHealthy()
	}
	return s
}

// environ turns env into "KEY=value" entries, in the order of their keys.
func environ(env map[string]string) []string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(env)) {
		out = append(out, k+"="+env[k])
	}
	return out
}

// dialServer connects to a gRPC port: over TLS with tlsConf when it is set,
// in plaintext otherwise, sending token as a bearer token when it is set.
// The connection is closed when the test ends.
func dialServer(t *testing.T, addr string, tlsConf *tls.Config, token string) *grpc.ClientConn {
	t.Helper()
	creds := insecure.NewCredentials()
	if tlsConf != nil {
		creds = credentials.NewTLS(tlsConf.Clone())
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(creds)}
	if token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearerToken(token)))
	}
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// bearerToken sends "authorization: Bearer <token>" with every call, with
// or without TLS.
type bearerToken string

func (b bearerToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

func (bearerToken) RequireTransportSecurity() bool { return false }

// URL is the address of path on the HTTP port, http or https.
func (s *server) URL(path string) string {
	if s.opts.TLS != nil {
		return "https://" + s.HTTPAddr + path
	}
	return "http://" + s.HTTPAddr + path
}

// newRequest is a request to the HTTP port with the harness's token.
func (s *server) newRequest(ctx context.Context, method, path string, body io.Reader) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, s.URL(path), body)
	if err == nil && s.opts.Token != "" {
		req.Header.Set("Authorization", "Bearer "+s.opts.Token)
	}
	return req, err
}

// waitHealthy waits until /healthz says SERVING.
func (s *server) waitHealthy() {
	s.t.Helper()
	h := serverproc.Health{Client: s.HTTP, HTTPS: s.opts.TLS != nil}
	if s.opts.Token != "" {
		h.Header = http.Header{"Authorization": {"Bearer " + s.opts.Token}}
	}
	if s.proc != nil {
		if err := s.proc.WaitHealthy(10*time.Second, h); err != nil {
			s.t.Fatal(err)
		}
		return
	}
	if err := h.Wait(s.HTTPAddr, 10*time.Second, s.local.exited); err != nil {
		s.t.Fatalf("%v; its log:\n%s", err, s.Logs())
	}
}

// needProcess fails the test unless s is a server process: what (a PID, an
// exit code, a kill) only a process has.
func (s *server) needProcess(t *testing.T, what string) {
	t.Helper()
	if s.proc == nil {
		t.Fatalf("%s needs the server to be a process of its own: start it with startProcess or serverOptions{Process: true}", what)
	}
}

// Stop sends sig and waits for the process to end; it returns false if it
// had not ended within 15 s (then it is killed). A server in this process
// can only be stopped as SIGTERM or SIGINT stops the binary: its context
// ends, and Stop waits as long for Run to return.
func (s *server) Stop(sig syscall.Signal) bool {
	s.t.Helper()
	if s.proc != nil {
		return s.proc.Stop(sig)
	}
	if sig != syscall.SIGTERM && sig != syscall.SIGINT {
		s.needProcess(s.t, "Stop("+sig.String()+")")
	}
	return s.local.Stop()
}

// PID is the process's id.
func (s *server) PID() int {
	s.t.Helper()
	s.needProcess(s.t, "PID")
	return s.proc.PID()
}

// ExitCode is the process's exit code once it has ended.
func (s *server) ExitCode() int {
	s.t.Helper()
	s.needProcess(s.t, "ExitCode")
	return s.proc.ExitCode()
}

// Logs returns what the server wrote to stderr so far (for a server in
// this process, what it logged).
func (s *server) Logs() string {
	if s.proc != nil {
		return s.proc.Logs()
	}
	return s.local.Logs()
}

// alive reports whether the server is still running.
func (s *server) alive() bool {
	if s.proc != nil {
		return s.proc.Alive()
	}
	return s.local.Alive()
}

// restCall makes a REST call and returns the status and decoded JSON body.
func (s *server) restCall(t *testing.T, method, path, body string) (int, map[string]any) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := s.newRequest(context.Background(), method, path, r)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.HTTP.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("%s %s: body is not a JSON object: %q", method, path, raw)
	}
	return resp.StatusCode, out
}

// watcher collects the events of one gRPC watch.
type watcher struct {
	cancel context.CancelFunc
	events chan *pb.ExpirationEvent
	done   chan error
}

// watch opens a gRPC watch after the cursor ("" for live) and waits until
// the server has accepted it.
func (s *server) watch(t *testing.T, after string) *watcher {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	stream, err := s.Client.WatchExpirations(ctx, &pb.WatchExpirationsRequest{AfterCursor: after})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Header(); err != nil {
		t.Fatal(err)
	}
	w := &watcher{cancel: cancel, events: make(chan *pb.ExpirationEvent, 100000), done: make(chan error, 1)}
	go func() {
		for {
			ev, err := stream.Recv()
			if err != nil {
				w.done <- err
				return
			}
			w.events <- ev
		}
	}()
	return w
}

// next waits for the watcher's next event.
func (w *watcher) next(t *testing.T, timeout time.Duration) *pb.ExpirationEvent {
	t.Helper()
	select {
	case ev := <-w.events:
		return ev
	case err := <-w.done:
		t.Fatalf("watch ended: %v", err)
	case <-time.After(timeout):
		t.Fatalf("no event within %s", timeout)
	}
	return nil
}

// collect gathers n events, failing after timeout.
func (w *watcher) collect(t *testing.T, n int, timeout time.Duration) []*pb.ExpirationEvent {
	t.Helper()
	out := make([]*pb.ExpirationEvent, 0, n)
	deadline := time.After(timeout)
	for len(out) < n {
		select {
		case ev := <-w.events:
			out = append(out, ev)
		case err := <-w.done:
			t.Fatalf("watch ended after %d of %d events: %v", len(out), n, err)
		case <-deadline:
			t.Fatalf("only %d of %d events within %s", len(out), n, timeout)
		}
	}
	return out
}

// quiet asserts that no further event arrives for d.
func (w *watcher) quiet(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case ev := <-w.events:
		t.Fatalf("unexpected event %v", ev)
	case <-time.After(d):
	}
}

// waitUntil polls cond every 20 ms until it holds, or fails the test after
// timeout.
func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(timeout); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("%s: not within %s", what, timeout)
		}
	}
}
