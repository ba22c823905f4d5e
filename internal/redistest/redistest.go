// Package redistest starts real redis-server processes, single servers and
// Redis Clusters, each on free loopback ports: for tests (Start,
// StartCluster), stopped when the test ends, and for programs that are not
// tests, such as the benchmarks (Launch, LaunchCluster), which return an
// error and leave the stopping to the caller.
package redistest

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/orderexpiry/orderexpiry/internal/redisstore"
)

// startTimeout bounds how long a new server may take to answer PING.
const startTimeout = 5 * time.Second

// Server is a redis-server process started by Start.
type Server struct {
	// Addr is the server's "127.0.0.1:port".
	Addr string

	bin, dir string
	argv     []string // the full command line after the binary
	tls      *TLS     // set for a server that speaks only TLS
	password string   // from --requirepass

	cmd      *exec.Cmd
	exited   chan struct{} // closed when the process has exited
	killOnce *sync.Once
	log      *LockedBuffer
}

// Start starts a redis-server on a free loopback port, waits until it
// answers PING and stops it when the test ends. It runs without persistence
// (--save "" --appendonly no) unless args say otherwise; args are passed to
// redis-server as they are, e.g. "--rename-command", "CONFIG", "".
//
// The tests need a real Redis: when redis-server is not installed, Start
// fails the test rather than skipping it, so that a missing Redis cannot
// pass for a green run.
func Start(t testing.TB, args ...string) *Server {
	t.Helper()
	return startServer(t, nil, args)
}

// TLS names the PEM files of a server that speaks only TLS: its certificate
// and key, and the CA that signed them (clients trust it). The server does
// not ask clients for a certificate.
type TLS struct {
	CertFile, KeyFile, CAFile string
}

// StartTLS starts a redis-server as Start does, listening only with TLS.
func StartTLS(t testing.TB, files TLS, args ...string) *Server {
	t.Helper()
	return startServer(t, &files, args)
}

func startServer(t testing.TB, files *TLS, args []string) *Server {
	t.Helper()
	s, err := Launch(t.TempDir(), files, args...)
	if err != nil {
		t.Fatalf("redistest: these tests run against a real Redis: %v", err)
	}
	t.Cleanup(s.Kill)
	return s
}

// Launch starts a redis-server as Start does (with TLS when files is not
// nil), keeping its files in dir, for a program that is not a test: the
// caller stops it with Kill.
func Launch(dir string, files *TLS, args ...string) (*Server, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, fmt.Errorf("redis-server is not on PATH (%v); install it with `apt-get install redis-server` (Debian/Ubuntu)", err)
	}
	// Another process may take the port between our probe and the server's
	// bind; then the server exits with "Address already in use" and we try
	// another port.
	for attempt := 1; ; attempt++ {
		s, err := start(bin, dir, files, args)
		if err == nil || !errors.Is(err, errAddrInUse) || attempt == 5 {
			return s, err
		}
	}
}

var errAddrInUse = errors.New("address already in use")

func start(bin, dir string, files *TLS, args []string) (*Server, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	argv := []string{"--port", strconv.Itoa(port)}
	if files != nil {
		argv = []string{"--port", "0", "--tls-port", strconv.Itoa(port),
			"--tls-cert-file", files.CertFile, "--tls-key-file", files.KeyFile, "--tls-ca-cert-file", files.CAFile, "--tls-auth-clients", "no"}
	}
	argv = append(argv, "--bind", "127.0.0.1", "--dir", dir, "--loglevel", "warning")
	if !hasOption(args, "--save") {
		argv = append(argv, "--save", "")
	}
	if !hasOption(args, "--appendonly") {
		argv = append(argv, "--appendonly", "no")
	}
	argv = append(argv, args...)

	s := &Server{Addr: addr, bin: bin, dir: dir, argv: argv, tls: files}
	for i, a := range args {
		if a == "--requirepass" && i+1 < len(args) {
			s.password = args[i+1]
		}
	}
	if err := s.launch(); err != nil {
		return nil, err
	}
	if err := s.waitReady(); err != nil {
		s.Kill()
		out := s.log.String()
		if strings.Contains(out, "already in use") {
			return nil, fmt.Errorf("%w: %s", errAddrInUse, addr)
		}
		return nil, fmt.Errorf("redis-server %q on %s: %w; its output:\n%s", argv, addr, err, out)
	}
	return s, nil
}

// launch starts the process.
func (s *Server) launch() error {
	s.exited, s.log, s.killOnce = make(chan struct{}), &LockedBuffer{}, &sync.Once{}
	s.cmd = exec.Command(s.bin, s.argv...)
	s.cmd.Stdout = s.log
	s.cmd.Stderr = s.log
	setParentDeathSignal(s.cmd)
	if err := s.cmd.Start(); err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	exited := s.exited
	go func() {
		_ = s.cmd.Wait()
		close(exited)
	}()
	return nil
}

// Restart starts the server again after Kill, on the same port and with the
// same options and data directory, so that it loads what it had persisted
// (with "--appendonly", "yes", its AOF), and waits until it answers PING,
// which Redis does only once loading is done.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Kill()
	if err := s.launch(); err != nil {
		t.Fatalf("redistest: %v", err)
	}
	if err := s.waitReady(); err != nil {
		t.Fatalf("redistest: restart on %s: %v; its output:\n%s", s.Addr, err, s.log.String())
	}
}

// waitReady waits until the server answers PING, it exits, or startTimeout
// passes. It speaks RESP on a bare connection: a client's pool would back off
// after the first refused dials.
func (s *Server) waitReady() error {
	deadline := time.Now().Add(startTimeout)
	for {
		err := s.ping()
		if err == nil {
			return nil
		}
		select {
		case <-s.exited:
			return fmt.Errorf("exited before answering PING (%v)", s.cmd.ProcessState)
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no answer to PING within %s: %w", startTimeout, err)
		}
	}
}

// ping asks for PONG on a bare connection (TLS for a TLS server); a server
// that wants a password answers NOAUTH, which also says it is up.
func (s *Server) ping() error {
	var c net.Conn
	var err error
	d := &net.Dialer{Timeout: 200 * time.Millisecond}
	if s.tls != nil {
		var cfg *tls.Config
		if cfg, err = s.tlsConfig(); err != nil {
			return err
		}
		c, err = tls.DialWithDialer(d, "tcp", s.Addr, cfg)
	} else {
		c, err = d.Dial("tcp", s.Addr)
	}
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(200 * time.Millisecond))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	reply := make([]byte, 64)
	n, err := c.Read(reply)
	if err != nil {
		return err
	}
	if r := string(reply[:n]); !strings.HasPrefix(r, "+PONG") && !strings.HasPrefix(r, "-NOAUTH") {
		return fmt.Errorf("PING answered %q", reply[:n])
	}
	return nil
}

// URL is the server's URL for database 0: rediss:// for a TLS server, with
// the password when it has one.
func (s *Server) URL() string {
	scheme, auth := "redis://", ""
	if s.tls != nil {
		scheme = "rediss://"
	}
	if s.password != "" {
		auth = ":" + s.password + "@"
	}
	return scheme + auth + s.Addr + "/0"
}

// TLSFiles are what a client needs to trust a TLS server.
func (s *Server) TLSFiles() redisstore.TLSFiles {
	if s.tls == nil {
		return redisstore.TLSFiles{}
	}
	return redisstore.TLSFiles{CA: s.tls.CAFile}
}

func (s *Server) tlsConfig() (*tls.Config, error) {
	b, err := os.ReadFile(s.tls.CAFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(b)
	return &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}, nil
}

// Client returns a client of the server, made by redisstore.NewClient so that
// it has the service's timeouts; it is closed when the test ends.
func (s *Server) Client(t testing.TB) *redis.Client {
	t.Helper()
	rdb, err := redisstore.NewClient(s.URL(), s.TLSFiles())
	if err != nil {
		t.Fatalf("redistest: %v", err)
	}
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

// Dir is the server's data directory, where it keeps dump.rdb and its
// AOF: a test may copy them, and put an older copy back before Restart.
func (s *Server) Dir() string { return s.dir }

// PID is the server's process id.
func (s *Server) PID() int { return s.cmd.Process.Pid }

// Kill stops the server at once with SIGKILL, as a crash would, and waits
// until it has exited. It may be called more than once.
func (s *Server) Kill() {
	s.killOnce.Do(func() {
		_ = s.cmd.Process.Kill()
		<-s.exited
	})
}

// freePort returns a loopback port that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func hasOption(args []string, name string) bool {
	for _, a := range args {
		if a == name {
			return true
		}
	}
	return false
}

// LockedBuffer is a buffer that one goroutine writes while another reads:
// a child process's output, a logger's lines.
type LockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p.
func (b *LockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns what was written so far.
func (b *LockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
