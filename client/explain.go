package client

import (
	"context"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// explain adds to the error of a call what to change when it says that the
// client's settings do not fit the service: TLS against a plaintext port
// (`make run` serves plaintext), plaintext against a TLS port, a
// certificate the client does not trust, a token missing or refused. The
// hint names the option, and the flag or environment variable that
// orderexpiryctl and the examples read it from. The code and the original
// message stay, so that the error is handled as before.
func explain(opts Options, err error) error {
	st, ok := status.FromError(err)
	if !ok || err == nil {
		return err
	}
	msg := st.Message()
	var hint string
	switch st.Code() {
	case codes.Unavailable:
		switch {
		case !opts.Insecure && strings.Contains(msg, "first record does not look like a TLS handshake"):
			hint = "the service does not speak TLS (make run serves plaintext): dial it with Options.Insecure (flag -insecure)"
		case !opts.Insecure && strings.Contains(msg, "x509:"):
			hint = "the client does not trust the service's certificate: give the CA that signed it in Options.CAFile (flag -ca)"
		case opts.Insecure && strings.Contains(msg, "error reading server preface"):
			hint = "the service closed the connection before a word of HTTP/2; if it serves TLS, dial it without Options.Insecure (drop -insecure), with Options.CAFile (flag -ca) for a private CA"
		}
	case codes.Unauthenticated:
		if opts.Token == "" {
			hint = "the service wants a token: give it in Options.Token (flag -token, or ORDEREXPIRY_TOKEN in the environment)"
		} else {
			hint = "the service refused the token of Options.Token (flag -token, or ORDEREXPIRY_TOKEN in the environment)"
		}
	}
	if hint == "" {
		return err
	}
	p := st.Proto()
	p.Message = msg + "; " + hint
	return status.FromProto(p).Err()
}

// explaining are the interceptors that pass every call's error through
// explain.
func explaining(opts Options) []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, callOpts ...grpc.CallOption) error {
			return explain(opts, invoker(ctx, method, req, reply, cc, callOpts...))
		}),
		grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, callOpts ...grpc.CallOption) (grpc.ClientStream, error) {
			s, err := streamer(ctx, desc, cc, method, callOpts...)
			if err != nil {
				return nil, explain(opts, err)
			}
			return explainedStream{ClientStream: s, opts: opts}, nil
		}),
	}
}

// explainedStream passes the errors of a stream's messages through explain.
type explainedStream struct {
	grpc.ClientStream
	opts Options
}

func (s explainedStream) RecvMsg(m any) error { return explain(s.opts, s.ClientStream.RecvMsg(m)) }

func (s explainedStream) SendMsg(m any) error { return explain(s.opts, s.ClientStream.SendMsg(m)) }
