// Package auth checks bearer tokens on every RPC. Tokens come from a file or
// the environment; they are compared in constant time and never logged or
// echoed in an error.
package auth

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"net/http"
	"os"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Tokens is a set of accepted bearer tokens, kept as SHA-256 digests so
// that comparing them takes the same time whatever the token.
type Tokens struct {
	digests [][32]byte
	// open holds the method prefixes that need no token.
	open []string
}

// ParseTokens reads tokens from a list separated by commas or new lines;
// blank lines and lines starting with '#' are skipped. A comment is the
// whole line, commas included: split at its commas, a comment would give
// tokens made of its words.
func ParseTokens(list string) []string {
	var out []string
	for _, line := range strings.Split(list, "\n") {
		if line = strings.TrimSpace(line); strings.HasPrefix(line, "#") {
			continue
		}
		for _, tok := range strings.Split(line, ",") {
			if tok = strings.TrimSpace(tok); tok != "" && !strings.HasPrefix(tok, "#") {
				out = append(out, tok)
			}
		}
	}
	return out
}

// LoadTokens returns the tokens of a file (one a line) and of a list from
// the environment, together. A token that a client could not send in an
// authorization header (see bearerToken) is an error, which says where it
// is but not what it is.
func LoadTokens(file, list string) ([]string, error) {
	tokens := ParseTokens(list)
	if err := checkTokens(tokens, "AUTH_TOKENS"); err != nil {
		return nil, err
	}
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("auth tokens file: %w", err)
		}
		more := ParseTokens(string(b))
		if err := checkTokens(more, "the auth tokens file"); err != nil {
			return nil, err
		}
		tokens = append(tokens, more...)
	}
	return tokens, nil
}

func checkTokens(tokens []string, from string) error {
	for i, tok := range tokens {
		if !isB64Token(tok) {
			return fmt.Errorf("token %d of %s (not counting comments and blank lines) is not a bearer token: use letters, digits and - . _ ~ + /, with = only at the end", i+1, from)
		}
	}
	return nil
}

// bearerToken returns the token of an authorization header of the form
// RFC 6750 gives it (section 2.1): the scheme "Bearer", in any case as RFC
// 7235 has it, one space and a b64token. Nothing else is accepted: no
// other white space (RFC 6750 allows several spaces; one is what every
// client sends), no second word, no character outside the b64token's.
func bearerToken(header string) (string, bool) {
	const scheme = "bearer "
	if len(header) <= len(scheme) || !strings.EqualFold(header[:len(scheme)], scheme) {
		return "", false
	}
	token := header[len(scheme):]
	return token, isB64Token(token)
}

// isB64Token reports whether s is a b64token (RFC 6750, section 2.1): one or
// more of letters, digits and - . _ ~ + /, then any number of =.
func isB64Token(s string) bool {
	i := 0
	for i < len(s) && isB64Char(s[i]) {
		i++
	}
	if i == 0 {
		return false
	}
	for i < len(s) && s[i] == '=' {
		i++
	}
	return i == len(s)
}

func isB64Char(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("-._~+/", c) >= 0
}

// OpenServices maps the names accepted by configuration to the gRPC method
// prefixes they leave open.
var OpenServices = map[string]string{
	"health":     "/grpc.health.v1.Health/",
	"reflection": "/grpc.reflection.",
}

// New returns a checker that accepts the tokens and leaves the methods under
// the open prefixes unchecked.
func New(tokens []string, openPrefixes []string) *Tokens {
	t := &Tokens{open: openPrefixes}
	for _, tok := range tokens {
		t.digests = append(t.digests, sha256.Sum256([]byte(tok)))
	}
	return t
}

// Check says whether the incoming metadata of a call to method carries an
// accepted token.
func (t *Tokens) Check(ctx context.Context, method string) error {
	for _, p := range t.open {
		if strings.HasPrefix(method, p) {
			return nil
		}
	}
	// Only this one key is copied out of the metadata, not all of it: the
	// check runs on every call.
	vals := metadata.ValueFromIncomingContext(ctx, "authorization")
	switch {
	case len(vals) == 0:
		return status.Error(codes.Unauthenticated, `missing bearer token: send the header "authorization: Bearer <token>"`)
	case len(vals) > 1:
		return status.Errorf(codes.Unauthenticated, "%d authorization headers: send one", len(vals))
	}
	token, ok := bearerToken(vals[0])
	if !ok {
		return status.Error(codes.Unauthenticated, `malformed authorization header: want "Bearer <token>", the scheme, one space and the token, with no other white space`)
	}
	d := sha256.Sum256([]byte(token))
	match := 0
	for _, want := range t.digests {
		match |= subtle.ConstantTimeCompare(d[:], want[:])
	}
	if match != 1 {
		return status.Error(codes.Unauthenticated, "invalid bearer token")
	}
	return nil
}

// Unary is the interceptor for unary RPCs.
func (t *Tokens) Unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if err := t.Check(ctx, info.FullMethod); err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

// Stream is the interceptor for streaming RPCs.
func (t *Tokens) Stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if err := t.Check(ss.Context(), info.FullMethod); err != nil {
		return err
	}
	return handler(srv, ss)
}

// HTTP returns a check of an HTTP request's Authorization header, for the
// endpoints the gateway serves itself; nil when t is nil (no tokens).
func (t *Tokens) HTTP() func(*http.Request) error {
	if t == nil {
		return nil
	}
	return func(r *http.Request) error {
		md := metadata.Pairs()
		if h := r.Header.Values("Authorization"); len(h) > 0 {
			md.Set("authorization", h...)
		}
		return t.Check(metadata.NewIncomingContext(r.Context(), md), "")
	}
}
