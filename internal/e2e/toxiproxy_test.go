package e2e

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2/client"
)

var (
	toxiproxyOnce sync.Once
	toxiproxyBin  string
	toxiproxyErr  error
)

// startToxiproxy builds toxiproxy-server (pinned in go.mod) once, starts it
// on a free loopback port for the test and returns its client.
func startToxiproxy(t *testing.T) *toxiproxy.Client {
	t.Helper()
	toxiproxyOnce.Do(func() {
		dir, err := os.MkdirTemp("", "toxiproxy")
		if err != nil {
			toxiproxyErr = err
			return
		}
		toxiproxyBin = filepath.Join(dir, "toxiproxy-server")
		out, err := exec.Command("go", "build", "-o", toxiproxyBin, "github.com/Shopify/toxiproxy/v2/cmd/server").CombinedOutput()
		if err != nil {
			toxiproxyErr = err
			t.Logf("%s", out)
		}
	})
	if toxiproxyErr != nil {
		t.Fatalf("building toxiproxy-server: %v", toxiproxyErr)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cmd := exec.Command(toxiproxyBin, "-host", "127.0.0.1", "-port", strconv.Itoa(port))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	client := toxiproxy.NewClient("127.0.0.1:" + strconv.Itoa(port))
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := client.Version(); err == nil {
			return client
		}
		if time.Now().After(deadline) {
			t.Fatal("toxiproxy-server did not answer within 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// withToxic adds a toxic of the given type to both directions of proxy,
// keeps it for d, and removes it.
func withToxic(t *testing.T, proxy *toxiproxy.Proxy, name, typ string, attrs toxiproxy.Attributes, d time.Duration) {
	t.Helper()
	for _, stream := range []string{"downstream", "upstream"} {
		if _, err := proxy.AddToxic(name+"-"+stream, typ, stream, 1, attrs); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(d)
	for _, stream := range []string{"downstream", "upstream"} {
		if err := proxy.RemoveToxic(name + "-" + stream); err != nil {
			t.Fatal(err)
		}
	}
}
