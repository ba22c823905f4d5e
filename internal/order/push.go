package order

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"time"
)

// PushConfig is a push group's endpoint: the service POSTs each of the
// group's events to URL, signed with Secret as the Standard Webhooks
// specification says. Its zero value is no push endpoint.
//
// The secret is kept in the store with the group, so that every replica
// can sign; it is never returned by the API nor logged: String, GoString
// and LogValue leave it out and show its Fingerprint.
type PushConfig struct {
	// URL is the endpoint; empty for a group without one.
	URL string
	// Secret is the signing secret in the Standard Webhooks form
	// "whsec_<base64>".
	Secret string
	// MaxConcurrency bounds the requests in flight at once from one
	// replica.
	MaxConcurrency int
	// Timeout bounds each request.
	Timeout time.Duration
}

// Enabled says whether the group has a push endpoint.
func (p PushConfig) Enabled() bool { return p.URL != "" }

// Fingerprint names the secret without showing it: "sha256:" and the first
// 16 hex digits of the SHA-256 of the secret as given. It is empty when
// there is no secret.
func (p PushConfig) Fingerprint() string {
	if p.Secret == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(p.Secret))
	return "sha256:" + hex.EncodeToString(sum[:8])
}

// String shows the config with its secret's fingerprint in its place.
func (p PushConfig) String() string {
	return fmt.Sprintf("{URL:%s Secret:%s MaxConcurrency:%d Timeout:%s}", p.URL, p.Fingerprint(), p.MaxConcurrency, FormatDuration(p.Timeout))
}

// GoString is String, so that %#v does not show the secret either.
func (p PushConfig) GoString() string { return p.String() }

// LogValue logs the config with its secret's fingerprint in its place.
func (p PushConfig) LogValue() slog.Value {
	return slog.GroupValue(slog.String("url", p.URL), slog.String("secret", p.Fingerprint()),
		slog.Int("max_concurrency", p.MaxConcurrency), slog.Duration("timeout", p.Timeout))
}

// diff names the settings in which o differs from p, for GroupExists; a
// secret that differs is said to, by fingerprint.
func (p PushConfig) diff(o PushConfig) []string {
	var d []string
	if p.URL != o.URL {
		d = append(d, fmt.Sprintf("push url %q, not %q", p.URL, o.URL))
	}
	if p.Secret != o.Secret {
		d = append(d, fmt.Sprintf("push secret %s, not %s", orNone(p.Fingerprint()), orNone(o.Fingerprint())))
	}
	if p.MaxConcurrency != o.MaxConcurrency {
		d = append(d, fmt.Sprintf("push max_concurrency %d, not %d", p.MaxConcurrency, o.MaxConcurrency))
	}
	if p.Timeout != o.Timeout {
		d = append(d, fmt.Sprintf("push timeout %s, not %s", FormatDuration(p.Timeout), FormatDuration(o.Timeout)))
	}
	return d
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
