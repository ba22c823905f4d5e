package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"
	"unicode"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	retry "github.com/orderexpiry/orderexpiry/internal/backoff"
	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// Options say how Dial reaches the service. The zero value dials with TLS,
// trusting the system's certificate authorities, without a token.
type Options struct {
	// TLS is the TLS configuration of the connection (a private CA in
	// RootCAs, a client certificate for mutual TLS); nil: the system's
	// roots. Ignored when Insecure is set.
	TLS *tls.Config
	// CAFile names a PEM file of the certificate authorities that signed
	// the service's certificate, trusted instead of the system's (on a copy
	// of TLS); empty: none.
	CAFile string
	// Insecure dials without TLS, for a service on localhost or behind a
	// proxy that terminates TLS. The token, if any, then travels in clear.
	Insecure bool
	// Token is the bearer token sent with every call, as the header
	// "authorization: Bearer <token>"; empty: none.
	Token string
	// Backoff spaces the reconnections of Watch and Consume, and of the
	// connection itself; the zero value
	// waits 250ms first, then 1.6 times longer each time up to 15s, each
	// wait 20% shorter or longer at random. It starts again from the first
	// wait once a stream is open.
	Backoff backoff.Config
	// Logger receives a warning each time Watch or Consume reconnects or
	// an acknowledgement fails; nil: nothing is logged.
	Logger *slog.Logger
	// DialOptions are added to those of Dial, after them.
	DialOptions []grpc.DialOption
}

// defaultBackoff is the Backoff of Options' zero value.
var defaultBackoff = backoff.Config{BaseDelay: 250 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 15 * time.Second}

// Client is a client of the service. The generated client's methods are
// its own; Watch and Consume add the loops around the streams. It is safe
// for concurrent use.
type Client struct {
	pb.OrderServiceClient
	conn *grpc.ClientConn
	opts Options
}

// Dial returns a client of the service at target ("host:port", or any
// target grpc.NewClient takes). It does not connect yet: the first call
// does, and a connection that breaks is opened again by the next call.
func Dial(target string, opts Options) (*Client, error) {
	if opts.Backoff == (backoff.Config{}) {
		opts.Backoff = defaultBackoff
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	// Such a token would make a malformed header, which fails every call
	// with a less telling error.
	if strings.ContainsFunc(opts.Token, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) {
		return nil, errors.New("orderexpiry client: the token holds white space or a control character: give the token alone, without \"Bearer \"")
	}
	creds := insecure.NewCredentials()
	if !opts.Insecure {
		c, err := tlsConfig(opts)
		if err != nil {
			return nil, err
		}
		creds = credentials.NewTLS(c)
	}
	dial := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		// A watch can stay silent for long: pinging it every 30 s finds a
		// connection that died without a word (the server allows a ping
		// every 10 s).
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		// The connection is dialled again with the same backoff as the
		// streams, rather than grpc's default, which grows to 2 minutes
		// and would hold Watch back that long after an outage.
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: opts.Backoff, MinConnectTimeout: 20 * time.Second}),
	}
	dial = append(dial, explaining(opts)...)
	if opts.Token != "" {
		dial = append(dial, grpc.WithPerRPCCredentials(bearer{token: opts.Token, secure: !opts.Insecure}))
	}
	conn, err := grpc.NewClient(target, append(dial, opts.DialOptions...)...)
	if err != nil {
		return nil, fmt.Errorf("orderexpiry client: %w", err)
	}
	return &Client{OrderServiceClient: pb.NewOrderServiceClient(conn), conn: conn, opts: opts}, nil
}

// tlsConfig is the TLS configuration of opts, with the CAs of CAFile.
func tlsConfig(opts Options) (*tls.Config, error) {
	c := &tls.Config{}
	if opts.TLS != nil {
		c = opts.TLS.Clone()
	}
	if opts.CAFile == "" {
		return c, nil
	}
	pem, err := os.ReadFile(opts.CAFile)
	if err != nil {
		return nil, fmt.Errorf("orderexpiry client: CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("orderexpiry client: CA file %s holds no PEM certificate", opts.CAFile)
	}
	c.RootCAs = pool
	return c, nil
}

// Conn returns the client's connection, for other services on it (health).
func (c *Client) Conn() *grpc.ClientConn { return c.conn }

// Close closes the connection; calls still open fail.
func (c *Client) Close() error { return c.conn.Close() }

// bearer sends the token with every call.
type bearer struct {
	token  string
	secure bool
}

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + b.token}, nil
}

// RequireTransportSecurity refuses to send the token in clear unless
// Options.Insecure asked for it.
func (b bearer) RequireTransportSecurity() bool { return b.secure }

// Watch calls handle with every expiration after the cursor after ("" for
// live ones only, from now on; "0-0" for all the service retains), one at a
// time, in the log's order. Whenever the stream ends, it opens it again
// after the cursor of the last event handle returned from, after a backoff,
// so that handle sees each expiration once and misses none within the
// service's retention. (With after "", expirations before the first one
// received are not replayed.)
//
// Watch returns handle's error as it is, ctx's error once ctx ends, and
// the error of a stream that opening again would not mend: a malformed
// cursor (INVALID_ARGUMENT), one the retention has overtaken (OUT_OF_RANGE:
// expirations after it are lost; start again from "0-0" or ""), a refused
// token (UNAUTHENTICATED).
func (c *Client) Watch(ctx context.Context, after string, handle func(*pb.ExpirationEvent) error) error {
	return c.reopening(ctx, "watch", func() []any { return []any{"after", after} }, func(retries *int) error {
		return c.watchOnce(ctx, &after, retries, handle)
	})
}

// reopening runs one stream after another with once, after a backoff
// between them, until once returns a finalError (its error is returned as
// it is), ctx ends, or the stream's error is one that opening again would
// not mend. once resets *retries when its stream opens; attrs are logged
// with each reopening.
func (c *Client) reopening(ctx context.Context, what string, attrs func() []any, once func(retries *int) error) error {
	var retries int
	for {
		err := once(&retries)
		var h finalError
		if errors.As(err, &h) {
			return h.err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !retryable(err) {
			return err
		}
		d := c.wait(retries)
		retries++
		c.opts.Logger.Warn("orderexpiry: the "+what+" ended; opening it again", append(attrs(), "err", err, "retry_in", d)...)
		if !retry.Sleep(ctx, d) {
			return ctx.Err()
		}
	}
}

// finalError carries out of a stream's loop an error that ends the loop as
// it is: a handler's, or options that the group does not take, to be told
// from the stream's own.
type finalError struct{ err error }

func (h finalError) Error() string { return h.err.Error() }

// watchOnce runs one stream of Watch until it ends, moving *after past each
// event handled; *retries is reset once the stream is open.
func (c *Client) watchOnce(ctx context.Context, after *string, retries *int, handle func(*pb.ExpirationEvent) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.WatchExpirations(ctx, &pb.WatchExpirationsRequest{AfterCursor: *after})
	if err != nil {
		return err
	}
	// The service sends the headers once it follows the log. (Header has
	// no error to give: a stream refused at once has no headers.)
	if md, _ := stream.Header(); md != nil {
		*retries = 0
	}
	for {
		ev, err := stream.Recv()
		if err != nil {
			return err
		}
		if err := handle(ev); err != nil {
			return finalError{err}
		}
		*after = ev.GetCursor()
	}
}

// retryable says whether opening a stream again may mend what ended it:
// the end of the stream, a server stopping or unreachable, a limit that
// frees up; not a request that the service refuses as it is.
func retryable(err error) bool {
	if err == nil || errors.Is(err, io.EOF) {
		return true
	}
	// A failed TLS handshake (a certificate the client does not trust, a
	// server that does not speak TLS) fails alike at every try: the
	// client's settings (CAFile, TLS, Insecure) are what to mend.
	if status.Code(err) == codes.Unavailable && strings.Contains(status.Convert(err).Message(), "authentication handshake failed") {
		return false
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.ResourceExhausted, codes.Aborted, codes.Internal,
		codes.Unknown, codes.DeadlineExceeded, codes.Canceled:
		return true
	}
	return false
}

// wait returns how long to wait before the retries+1th reconnection, as
// grpc's exponential backoff computes it from Options.Backoff.
func (c *Client) wait(retries int) time.Duration {
	b := c.opts.Backoff
	return retry.Policy{First: b.BaseDelay, Max: b.MaxDelay, Multiplier: b.Multiplier, Less: b.Jitter, More: b.Jitter}.Delay(retries)
}
