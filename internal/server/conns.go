package server

import (
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"
)

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
