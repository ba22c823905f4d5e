package redisstore_test

import (
	"net"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// TestUnresponsiveRedis points the store at an address that never answers a
// connection attempt, like a host that is down or a firewall that drops
// packets: calls must still fail in about a second, not hang.
func TestUnresponsiveRedis(t *testing.T) {
	checkUnavailable(t, silentAddr(t), 1500*time.Millisecond)
}

// silentAddr returns a loopback address where connection attempts time out.
// It listens with a backlog of zero and never accepts, then fills the accept
// queue: Linux drops the SYNs that come after.
func silentAddr(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(sa.(*syscall.SockaddrInet4).Port))
	for range 5 {
		c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err != nil {
			return addr // the queue is full: this attempt went unanswered
		}
		t.Cleanup(func() { c.Close() })
	}
	t.Fatalf("every connection to %s was accepted; cannot make an address that does not answer", addr)
	return ""
}
