package server

import (
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/orderexpiry/orderexpiry/internal/order"
)

// ConnConfig bounds what one client may hold open on the gRPC and HTTP
// ports, and for how long.
type ConnConfig struct {
	// MaxConnections caps the connections open on each port; past it an
	// idle HTTP connection is closed to make room, or the new one is (see
	// limitListener).
	MaxConnections int
	// IdleTimeout closes an HTTP keep-alive connection, or a gRPC
	// connection with no call, idle this long.
	IdleTimeout time.Duration
	// ReadTimeout bounds reading a REST request's headers and its body,
	// and a new gRPC connection's handshake.
	ReadTimeout time.Duration
	// MaxHeaderBytes bounds a gRPC call's metadata (its header list).
	MaxHeaderBytes int
	// MaxStreams bounds the calls open at once on one gRPC connection.
	MaxStreams int
}

func (c *ConnConfig) register(o *options) {
	o.Int(&c.MaxConnections, "max-connections", "MAX_CONNECTIONS", 4096, "connections open at once on each port; past it the HTTP connection idle the longest is closed to make room, or the new one is")
	o.Duration(&c.IdleTimeout, "idle-timeout", "IDLE_TIMEOUT", time.Minute, "closes an HTTP keep-alive connection, or a gRPC connection with no call, idle this long")
	o.Duration(&c.ReadTimeout, "read-timeout", "READ_TIMEOUT", 10*time.Second, "bound on reading a REST request's headers, and then its body, and on a new gRPC connection's handshake")
	o.Int(&c.MaxHeaderBytes, "max-header-bytes", "MAX_HEADER_BYTES", 32<<10, "largest metadata (header list) of a gRPC call; the HTTP port keeps net/http's 1 MiB (431 past it)")
	o.Int(&c.MaxStreams, "max-streams", "MAX_STREAMS", 1000, "calls open at once on one gRPC connection; more wait for a free one")
}

func (c *ConnConfig) parse(*options) error { return c.validate() }

// validate checks the bounds: each lets at least something through.
func (c *ConnConfig) validate() error {
	switch {
	case c.MaxConnections < 1:
		return optionErrorf("max-connections", "max connections must be at least 1, got %d", c.MaxConnections)
	case c.IdleTimeout <= 0:
		return optionErrorf("idle-timeout", "-idle-timeout and -read-timeout must be more than zero, got %s", order.FormatDuration(c.IdleTimeout))
	case c.ReadTimeout <= 0:
		return optionErrorf("read-timeout", "-idle-timeout and -read-timeout must be more than zero, got %s", order.FormatDuration(c.ReadTimeout))
	case c.MaxHeaderBytes < 1024:
		return optionErrorf("max-header-bytes", "max header bytes must be at least 1024, got %d", c.MaxHeaderBytes)
	case c.MaxStreams < 1:
		return optionErrorf("max-streams", "max streams must be at least 1, got %d", c.MaxStreams)
	}
	return nil
}

// limitListener caps the connections open through a listener, so that a
// client opening connections until the process runs out of descriptors
// cannot take the port (and /healthz with it) away from everyone else.
// At the cap, a new connection makes room by closing the connection idle
// the longest: an HTTP keep-alive connection between requests, which its
// client can open again at no loss. With none idle, the new connection is
// closed at once. Connections reading a request are not waited for: the
// read timeouts bound how long each can hold its place.
type limitListener struct {
	net.Listener
	max int
	log *slog.Logger

	mu   sync.Mutex
	open int
	// idle holds the connections between requests and since when, as
	// http.Server's ConnState reports them.
	idle map[net.Conn]time.Time
	// warned is when the last refusal was logged: one line a minute at
	// most, since an attack would otherwise fill the log.
	warned time.Time
}

func newLimitListener(l net.Listener, max int, log *slog.Logger) *limitListener {
	return &limitListener{Listener: l, max: max, log: log, idle: make(map[net.Conn]time.Time)}
}

// Accept returns the next connection, making room for it at the cap.
func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		l.mu.Lock()
		if l.open >= l.max {
			if victim := l.oldestIdle(); victim != nil {
				delete(l.idle, victim)
				// Its Close releases its place, under the lock taken below.
				l.mu.Unlock()
				_ = victim.Close()
				l.mu.Lock()
			}
		}
		if l.open >= l.max {
			now := time.Now()
			warn := now.Sub(l.warned) >= time.Minute
			if warn {
				l.warned = now
			}
			l.mu.Unlock()
			if warn {
				l.log.Warn("connection limit reached: closing new connections until one closes", "limit", l.max, "addr", l.Addr().String())
			}
			_ = c.Close()
			continue
		}
		l.open++
		l.mu.Unlock()
		return &limitedConn{Conn: c, l: l}, nil
	}
}

// oldestIdle returns the connection idle the longest, or nil; l.mu is held.
func (l *limitListener) oldestIdle() net.Conn {
	var victim net.Conn
	var since time.Time
	for c, t := range l.idle {
		if victim == nil || t.Before(since) {
			victim, since = c, t
		}
	}
	return victim
}

// connState is the http.Server ConnState hook that tells the listener which
// connections are idle.
func (l *limitListener) connState(c net.Conn, state http.ConnState) {
	// Over TLS the server reports the *tls.Conn around the listener's own.
	if tc, ok := c.(interface{ NetConn() net.Conn }); ok {
		c = tc.NetConn()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if state == http.StateIdle {
		l.idle[c] = time.Now()
	} else {
		delete(l.idle, c)
	}
}

// limitedConn gives its place back when it closes, once.
type limitedConn struct {
	net.Conn
	l    *limitListener
	once sync.Once
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.l.mu.Lock()
		c.l.open--
		delete(c.l.idle, c)
		c.l.mu.Unlock()
	})
	return err
}
