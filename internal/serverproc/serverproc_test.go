package serverproc

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The tests run this test binary as the server: with FAKE_SERVER set,
// TestMain plays one instead of running the tests.
func TestMain(m *testing.M) {
	switch os.Getenv("FAKE_SERVER") {
	case "":
		os.Exit(m.Run())
	case "serve":
		fakeServe()
	case "refuse":
		fmt.Fprintln(os.Stderr, "REDIS_URL: bad URL; flags:", strings.Join(os.Args[1:], " "))
		os.Exit(2)
	case "hang":
		time.Sleep(time.Hour)
	}
}

// fakeServe logs as the server does, serves /healthz (503 until
// FAKE_HEALTHY_AFTER has passed) and exits 3 on SIGTERM.
func fakeServe() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		os.Exit(1)
	}
	after, _ := time.ParseDuration(os.Getenv("FAKE_HEALTHY_AFTER"))
	healthy := time.Now().Add(after)
	go http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if time.Now().Before(healthy) || r.Header.Get("Authorization") != os.Getenv("FAKE_WANT_AUTH") {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	if os.Getenv("FAKE_JSON") != "" {
		fmt.Fprintf(os.Stderr, `{"time":"t","level":"INFO","msg":"serving profiles","debug":"127.0.0.1:7"}`+"\n")
		fmt.Fprintf(os.Stderr, `{"time":"t","level":"WARN","msg":"careful"}`+"\n")
		fmt.Fprintf(os.Stderr, `{"time":"t","level":"INFO","msg":"serving","grpc":"127.0.0.1:9","http":%q}`+"\n", l.Addr().String())
	} else {
		fmt.Fprintln(os.Stderr, `time=t level=INFO msg="serving profiles" debug=127.0.0.1:7`)
		fmt.Fprintln(os.Stderr, `time=t level=WARN msg=careful`)
		fmt.Fprintf(os.Stderr, "time=t level=INFO msg=serving grpc=127.0.0.1:9 http=%s flags=%q\n", l.Addr(), strings.Join(os.Args[1:], " "))
	}
	<-stop
	fmt.Fprintln(os.Stderr, "time=t level=INFO msg=stopped")
	os.Exit(3)
}

func fake(mode string, env ...string) Options {
	return Options{Binary: os.Args[0], Env: append([]string{"FAKE_SERVER=" + mode}, env...), Flags: []string{"-log-level", "debug"}}
}

func TestStartStop(t *testing.T) {
	for _, format := range []string{"text", "json"} {
		t.Run(format, func(t *testing.T) {
			env := []string{"FAKE_HEALTHY_AFTER=300ms", "FAKE_WANT_AUTH=Bearer tok"}
			if format == "json" {
				env = append(env, "FAKE_JSON=1")
			}
			p, err := Start(fake("serve", env...))
			if err != nil {
				t.Fatal(err)
			}
			defer p.Stop(syscall.SIGKILL)
			if p.GRPCAddr != "127.0.0.1:9" || p.DebugAddr != "127.0.0.1:7" || !strings.HasPrefix(p.HTTPAddr, "127.0.0.1:") {
				t.Fatalf("addresses grpc=%q http=%q debug=%q", p.GRPCAddr, p.HTTPAddr, p.DebugAddr)
			}
			if format == "text" && !strings.Contains(p.Logs(), `flags="-grpc-addr 127.0.0.1:0 -http-addr 127.0.0.1:0 -log-level debug"`) {
				t.Errorf("the server's flags are not the harness's then the caller's:\n%s", p.Logs())
			}
			if err := p.WaitHealthy(100*time.Millisecond, Health{}); err == nil {
				t.Fatal("healthy without the token the server wants")
			}
			began := time.Now()
			if err := p.WaitHealthy(5*time.Second, Health{Header: http.Header{"Authorization": {"Bearer tok"}}}); err != nil {
				t.Fatal(err)
			}
			t.Logf("healthy %s after the second wait began", time.Since(began))
			if w := p.Warnings(); len(w) != 1 || !strings.Contains(w[0], "careful") {
				t.Errorf("warnings %q, want the one WARN line", w)
			}
			if !p.Alive() || p.ExitCode() != -1 {
				t.Fatalf("alive %v, exit code %d while running", p.Alive(), p.ExitCode())
			}
			if !p.Stop(syscall.SIGTERM) {
				t.Fatal("did not stop on SIGTERM")
			}
			if p.Alive() || p.ExitCode() != 3 {
				t.Fatalf("alive %v, exit code %d after SIGTERM, want 3", p.Alive(), p.ExitCode())
			}
			if !strings.Contains(p.Logs(), "msg=stopped") {
				t.Errorf("the log lacks the last line:\n%s", p.Logs())
			}
			if !p.Stop(syscall.SIGTERM) {
				t.Error("a second Stop of an ended process says it did not stop")
			}
		})
	}
}

func TestStartFails(t *testing.T) {
	_, err := Start(fake("refuse"))
	if err == nil || !strings.Contains(err.Error(), "exited") || !strings.Contains(err.Error(), "REDIS_URL: bad URL") {
		t.Fatalf("Start of a server that refuses to start: %v; want its exit and its output", err)
	}
	_, err = Start(Options{Binary: "/nonexistent/orderexpiry"})
	if err == nil {
		t.Fatal("Start of a missing binary succeeded")
	}
}

func TestWaitHealthyExit(t *testing.T) {
	p, err := Start(fake("serve", "FAKE_HEALTHY_AFTER=1h"))
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(200 * time.Millisecond)
		_ = p.cmd.Process.Kill()
	}()
	began := time.Now()
	err = p.WaitHealthy(10*time.Second, Health{})
	if err == nil || !strings.Contains(err.Error(), "exited") || time.Since(began) > 5*time.Second {
		t.Fatalf("WaitHealthy on a server that died: %v after %s; want an error at once", err, time.Since(began))
	}
}

// TestStatus: a process's /proc status fields come in kB, at least its
// resident memory now within its peak; a field it lacks is an error.
func TestStatus(t *testing.T) {
	p, err := Start(fake("serve"))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop(syscall.SIGKILL)
	rss, err := p.Status("VmRSS")
	if err != nil {
		t.Fatal(err)
	}
	hwm, err := p.Status("VmHWM")
	if err != nil {
		t.Fatal(err)
	}
	if rss < 1024 || hwm < rss {
		t.Errorf("VmRSS %d kB, VmHWM %d kB; want at least 1 MB resident and the peak at least that", rss, hwm)
	}
	if n, err := p.Status("NoSuchField"); err == nil {
		t.Errorf("Status(NoSuchField) = %d, want an error", n)
	}
}

func TestRun(t *testing.T) {
	out, err := Run(fake("refuse"))
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 2 || !strings.Contains(out, "REDIS_URL: bad URL") {
		t.Fatalf("Run: %q, %v; want exit code 2 and the output", out, err)
	}
	if testing.Short() {
		return
	}
	began := time.Now()
	if _, err := Run(fake("hang")); !errors.Is(err, ErrNoExit) || time.Since(began) > 15*time.Second {
		t.Fatalf("Run of a server that does not exit: %v after %s", err, time.Since(began))
	}
}
