package e2e

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/orderexpiry/orderexpiry/internal/redistest"
)

// rssBytes is a process's resident memory, from /proc.
func rssBytes(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmRSS in /proc status")
	return 0
}

// descriptors is what a process holds open, from /proc: its descriptors
// in all, and which of them are TCP connections it accepted, by the peer's
// port. A test's own clients connect to the server it watches, and Go's
// connection pools open a second keep-alive connection when a request
// comes before the last one's connection is back in the pool (more often
// on a busy machine): counting only the descriptors that are not accepted
// connections, and the connections of known peers, keeps a leak check from
// counting the test's own clients.
type descriptors struct {
	total    int
	accepted map[int]int // connections accepted, by the peer's port
}

// openDescriptors reads what process pid holds open.
func openDescriptors(t *testing.T, pid int) descriptors {
	t.Helper()
	entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	sockets := map[string]bool{} // inodes
	for _, e := range entries {
		link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name()))
		if ino, ok := strings.CutPrefix(link, "socket:["); ok && err == nil {
			sockets[strings.TrimSuffix(ino, "]")] = true
		}
	}
	type conn struct {
		local, peer int
		listening   bool
	}
	var conns []conn
	for _, table := range []string{"tcp", "tcp6"} {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", pid, table))
		if errors.Is(err, fs.ErrNotExist) && table == "tcp6" {
			continue // a kernel without IPv6
		}
		if err != nil {
			t.Fatal(err)
		}
		// sl local_address rem_address st ... inode: addresses are hex
		// address:port, state 0A is LISTEN.
		for line := range strings.Lines(string(b)) {
			f := strings.Fields(line)
			if len(f) < 10 || !sockets[f[9]] {
				continue
			}
			conns = append(conns, conn{local: hexPort(t, f[1]), peer: hexPort(t, f[2]), listening: f[3] == "0A"})
		}
	}
	listening := map[int]bool{}
	for _, c := range conns {
		if c.listening {
			listening[c.local] = true
		}
	}
	d := descriptors{total: len(entries), accepted: map[int]int{}}
	for _, c := range conns {
		if !c.listening && listening[c.local] {
			d.accepted[c.peer]++
		}
	}
	return d
}

func hexPort(t *testing.T, addr string) int {
	t.Helper()
	_, port, _ := strings.Cut(addr, ":")
	n, err := strconv.ParseInt(port, 16, 32)
	if err != nil {
		t.Fatalf("/proc/net/tcp address %q", addr)
	}
	return int(n)
}

// own is the number of descriptors that are not connections the process
// accepted: its files, pipes, listeners and the connections it dialled.
func (d descriptors) own() int {
	n := d.total
	for _, c := range d.accepted {
		n -= c
	}
	return n
}

// from is the number of connections accepted from the given peer ports.
func (d descriptors) from(ports []int) int {
	n := 0
	for _, p := range ports {
		n += d.accepted[p]
	}
	return n
}

// rawHugeHeaderCall opens an HTTP/2 connection of its own, as a hostile
// client would (a gRPC client obeys the server's header limit and never
// sends such a call), and sends one gRPC call whose metadata holds one
// header of size bytes, with no token. It returns once the server has
// answered the stream or closed the connection.
func rawHugeHeaderCall(addr string, size int) error {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		return err
	}
	fr := http2.NewFramer(c, c)
	if err := fr.WriteSettings(); err != nil {
		return err
	}
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for _, f := range []hpack.HeaderField{
		{Name: ":method", Value: "POST"}, {Name: ":scheme", Value: "http"},
		{Name: ":path", Value: "/orderexpiry.v1.OrderService/GetOrder"}, {Name: ":authority", Value: addr},
		{Name: "content-type", Value: "application/grpc"}, {Name: "te", Value: "trailers"},
		{Name: "x-padding", Value: strings.Repeat("a", size)},
	} {
		if err := enc.WriteField(f); err != nil {
			return err
		}
	}
	// The server may close the connection before the whole block is sent:
	// a write error then is the answer, not a failure. The reader below
	// only reads, so the framer is never written from two goroutines (the
	// server's settings go unacknowledged, which it tolerates).
	go func() {
		const chunk = 16 << 10
		b := block.Bytes()
		first := b[:min(chunk, len(b))]
		if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: first, EndHeaders: len(b) <= chunk}); err != nil {
			return
		}
		for off := chunk; off < len(b); off += chunk {
			end := min(off+chunk, len(b))
			if err := fr.WriteContinuation(1, end == len(b), b[off:end]); err != nil {
				return
			}
		}
	}()
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return nil // the server closed the connection
		}
		switch f := f.(type) {
		case *http2.GoAwayFrame, *http2.RSTStreamFrame:
			return nil
		case *http2.HeadersFrame:
			if f.StreamID == 1 {
				return nil
			}
		}
	}
}

// TestHugeGRPCHeaders: 16 calls at once, each with one 15 MiB metadata
// header and no token, leave the server's memory where it was, and the
// server keeps answering.
func TestHugeGRPCHeaders(t *testing.T) {
	s := startServerWith(t, serverOptions{Token: "tok1", Process: true}, map[string]string{"AUTH_TOKENS": "tok1"})
	pid := s.PID()
	before := rssBytes(t, pid)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 16 {
		wg.Go(func() { errs <- rawHugeHeaderCall(s.GRPCAddr, 15<<20) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("huge-header call: %v", err)
		}
	}
	after := rssBytes(t, pid)
	t.Logf("RSS before %d MB, after 16 calls with a 15 MiB header: %d MB", before>>20, after>>20)
	if grown := after - before; grown > 64<<20 {
		t.Errorf("RSS grew by %d MB (from %d MB to %d MB); the header limit should keep it flat", grown>>20, before>>20, after>>20)
	}
	if code, body := s.restCall(t, "POST", "/v1/orders", `{"order_id":"after-headers","ttl":"60s"}`); code != http.StatusOK {
		t.Errorf("checkout after the attack: %d %v", code, body)
	}
}

// idleHTTPConn opens a connection to the HTTP port and makes one request
// on it, keeping the connection open (keep-alive) for the caller.
func idleHTTPConn(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return c
}

// closedWithin reports whether the server closes c within d; the server
// may answer first (a 408 for a body that never came), then close.
func closedWithin(c net.Conn, d time.Duration) bool {
	_ = c.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, c)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		return false
	}
	return true
}

// TestConnectionLimits: idle keep-alive connections, requests whose body
// never comes and silent gRPC connections are each closed in bounded time;
// at the connection cap /healthz still answers, and the descriptors stay
// under the cap.
func TestConnectionLimits(t *testing.T) {
	if testing.Short() {
		t.Skip("connections held to their timeouts: skipped with -short")
	}
	const limit = 40
	s := startProcess(t, nil, "-max-connections", strconv.Itoa(limit), "-idle-timeout", "3s", "-read-timeout", "2s")
	pid := s.PID()
	base := openDescriptors(t, pid).total
	health := func() error {
		c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := c.Get(s.URL("/healthz"))
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	}

	t.Run("idle keep-alive connections make room", func(t *testing.T) {
		idle := make([]net.Conn, 2*limit)
		for i := range idle {
			idle[i] = idleHTTPConn(t, s.HTTPAddr)
		}
		if err := health(); err != nil {
			t.Errorf("/healthz with %d idle connections open: %v", len(idle), err)
		}
		if n := openDescriptors(t, pid).total; n > base+limit+2 {
			t.Errorf("%d descriptors open, want at most %d (the cap of %d over the %d at start)", n, base+limit+2, limit, base)
		}
		// The oldest were closed to make room for the newest.
		if !closedWithin(idle[0], time.Second) {
			t.Error("the oldest idle connection is still open past the cap")
		}
		// And the rest by the idle timeout.
		start := time.Now()
		if !closedWithin(idle[len(idle)-1], 6*time.Second) {
			t.Error("an idle connection outlived the 3s idle timeout by 3s")
		}
		t.Logf("idle connection closed %v after its check", time.Since(start).Round(100*time.Millisecond))
	})

	t.Run("a body that never comes", func(t *testing.T) {
		conns := make([]net.Conn, 10)
		for i := range conns {
			c, err := net.Dial("tcp", s.HTTPAddr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := io.WriteString(c, "POST /v1/orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"); err != nil {
				t.Fatal(err)
			}
			conns[i] = c
		}
		start := time.Now()
		for i, c := range conns {
			if !closedWithin(c, 6*time.Second) {
				t.Fatalf("connection %d waiting for its body is still open after %v; the read timeout is 2s", i, time.Since(start))
			}
		}
		t.Logf("10 requests without their body closed within %v", time.Since(start).Round(100*time.Millisecond))
		if err := health(); err != nil {
			t.Errorf("/healthz after: %v", err)
		}
	})

	t.Run("silent and preface-only gRPC connections", func(t *testing.T) {
		conns := make([]net.Conn, 20)
		for i := range conns {
			c, err := net.Dial("tcp", s.GRPCAddr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if i%2 == 1 {
				if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
					t.Fatal(err)
				}
			}
			conns[i] = c
		}
		start := time.Now()
		for i, c := range conns {
			if !closedWithin(c, 6*time.Second) {
				t.Fatalf("gRPC connection %d (preface sent: %v) still open after %v; the read timeout is 2s", i, i%2 == 1, time.Since(start))
			}
		}
		t.Logf("20 silent gRPC connections closed within %v", time.Since(start).Round(100*time.Millisecond))
	})
	if n := openDescriptors(t, pid).total; n > base+2 {
		t.Errorf("%d descriptors open after every connection closed, %d at start", n, base)
	}
}

// TestDebugCmdlineRedacted: /debug/pprof/cmdline does not show the Redis
// password of -redis-url.
func TestDebugCmdlineRedacted(t *testing.T) {
	const password = "s3cret-pw-42"
	r := redistest.Start(t, "--requirepass", password)
	s := startProcess(t, nil, "-debug-addr", "127.0.0.1:0", "-redis-url", "redis://:"+password+"@"+r.Addr+"/0")
	resp, err := http.Get("http://" + s.DebugAddr + "/debug/pprof/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("cmdline: %d %s", resp.StatusCode, body)
	}
	if bytes.Contains(body, []byte(password)) {
		t.Errorf("cmdline shows the Redis password: %q", body)
	}
	if !bytes.Contains(body, []byte("redis://:xxxxx@"+r.Addr)) {
		t.Errorf("cmdline %q does not show the redacted URL", body)
	}
}

// TestRESTPeerInLog: the debug line of a REST call, a refused one
// included, names the HTTP client's address, not the gateway's in-memory
// connection.
func TestRESTPeerInLog(t *testing.T) {
	s := startServerWith(t, serverOptions{Token: "tok1"}, map[string]string{"AUTH_TOKENS": "tok1"}, "-log-level", "debug")
	if code, body := s.restCall(t, "POST", "/v1/orders", `{"order_id":"peer-1","ttl":"60s"}`); code != http.StatusOK {
		t.Fatalf("checkout: %d %v", code, body)
	}
	resp, err := http.Get(s.URL("/v1/orders/peer-1"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("GET without a token: %d, want 401", resp.StatusCode)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		var checkout, refused string
		for line := range strings.Lines(s.Logs()) {
			switch {
			case strings.Contains(line, "grpc.method=Checkout"):
				checkout = line
			case strings.Contains(line, "grpc.method=GetOrder") && strings.Contains(line, "Unauthenticated"):
				refused = line
			}
		}
		if checkout != "" && refused != "" {
			for _, line := range []string{checkout, refused} {
				if strings.Contains(line, "bufconn") || !strings.Contains(line, "peer.address=127.0.0.1") {
					t.Errorf("REST call logged without the client's address: %s", line)
				}
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no debug line for the checkout and the refused call:\n%s", s.Logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
