package push

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"unicode"

	"github.com/orderexpiry/orderexpiry/internal/order"
)

// Policy says which push endpoints the service may call. Its zero value
// allows none: a service pushes only to hosts its operator named.
type Policy struct {
	// AllowHosts are the hosts a push URL may name: a host name or an IP
	// address as written in the URL (any case), "*.example.com" for every
	// host under example.com (not example.com itself), or "*" for any
	// host. None: push delivery is off.
	AllowHosts []string
	// AllowPrivate lets a push endpoint be at a loopback, private,
	// link-local or otherwise internal address. Without it such an address
	// is refused in a URL and, after DNS, at every connection.
	AllowPrivate bool
	// AllowHTTP lets a push URL be http://; without it https is required.
	AllowHTTP bool
}

// The bounds of a push URL and secret.
const (
	maxURLBytes  = 2048
	secretPrefix = "whsec_"
	// minSecretBytes and maxSecretBytes are the Standard Webhooks
	// specification's bounds on a secret's key.
	minSecretBytes = 24
	maxSecretBytes = 64
)

// CheckURL says whether a push URL is one this policy allows; its error is
// KindInvalid, about push_config.url, and says what to fix. A URL the
// policy refuses gets a reason of its own (PUSH_DISABLED and the
// PUSH_*_NOT_ALLOWED), for which the server names the setting to change. It does not resolve the host: a host
// name is checked at each connection instead (Control), where a DNS answer
// that changed since cannot get past it.
func (p Policy) CheckURL(raw string) (*url.URL, error) {
	refuse := func(reason order.ErrorReason, format string, args ...any) (*url.URL, error) {
		return nil, order.Fail(reason, "push_config.url", "push_config.url "+format, args...)
	}
	invalid := func(format string, args ...any) (*url.URL, error) {
		return refuse(order.ReasonInvalidPushConfig, format, args...)
	}
	if raw == "" {
		return invalid("is required: give the endpoint the events are POSTed to, such as https://hooks.example.com/expired")
	}
	if len(raw) > maxURLBytes {
		return invalid("has %d bytes, more than %d; use a shorter one", len(raw), maxURLBytes)
	}
	if strings.ContainsFunc(raw, func(r rune) bool { return unicode.IsSpace(r) || r > unicode.MaxASCII }) {
		return invalid("%q holds a space or a character that is not ASCII; percent-encode it", order.Clip(raw))
	}
	u, err := url.Parse(raw)
	if err != nil || !u.IsAbs() || u.Host == "" || u.Opaque != "" {
		return invalid("%q is not an absolute URL; give one such as https://hooks.example.com/expired", order.Clip(raw))
	}
	// Push off says so first: the other advice would not help.
	if len(p.AllowHosts) == 0 {
		return refuse(order.ReasonPushDisabled, "%q: push delivery is off on this service, which allows no push hosts; start it with the endpoint's host among its allowed push hosts", order.Clip(raw))
	}
	switch {
	case u.Scheme == "https":
	case u.Scheme == "http" && p.AllowHTTP:
	case u.Scheme == "http":
		return refuse(order.ReasonPushHTTPNotAllowed, "%q is http, and this service pushes over https only; use https, or start the service allowing http push URLs", order.Clip(raw))
	default:
		return invalid("%q has scheme %q; use https", order.Clip(raw), u.Scheme)
	}
	if u.User != nil {
		return invalid("holds a user name or password, which Get would show; drop them and check the webhook signature instead")
	}
	if u.Fragment != "" {
		return invalid("has a fragment (#...), which is never sent; drop it")
	}
	if port := u.Port(); port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return invalid("%q has port %q; give a port from 1 to 65535, or none for the scheme's own", order.Clip(raw), port)
		}
	}
	host := strings.ToLower(u.Hostname())
	if !p.hostAllowed(host) {
		return refuse(order.ReasonPushHostNotAllowed, "host %q is not in this service's allowed push hosts (%s); use one of them, or add it there",
			host, strings.Join(p.AllowHosts, ","))
	}
	if a, err := netip.ParseAddr(host); err == nil && !p.AllowPrivate && internal(a) {
		return refuse(order.ReasonPushPrivateNotAllowed, "host %s is a loopback, private or link-local address, which this service does not push to; use a public address, or start the service allowing private push addresses", host)
	}
	return u, nil
}

// hostAllowed says whether a host (lower case) is in AllowHosts.
func (p Policy) hostAllowed(host string) bool {
	for _, h := range p.AllowHosts {
		h = strings.ToLower(strings.Trim(h, "[]"))
		switch {
		case h == "*" || h == host:
			return true
		case strings.HasPrefix(h, "*.") && strings.HasSuffix(host, h[1:]):
			return true
		}
	}
	return false
}

// errInternalAddress is why a connection to an internal address is refused.
var errInternalAddress = errors.New("refused to connect to a loopback, private or link-local address (the service does not allow private push addresses)")

// Control is a net.Dialer's Control: it runs after DNS, on the address
// about to be dialed, and refuses an internal one unless AllowPrivate. So a
// host name that resolves to an internal address, at creation or at any
// later time (DNS rebinding), is refused all the same.
func (p Policy) Control(_, address string, _ syscall.RawConn) error {
	if p.AllowPrivate {
		return nil
	}
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("push dial to %q: not an IP address and port", address)
	}
	if internal(ap.Addr()) {
		return fmt.Errorf("push dial to %s: %w", ap.Addr(), errInternalAddress)
	}
	return nil
}

// internalPrefixes are the ranges beside netip's own tests that do not lead
// to a public host: "this network", the carrier-grade NAT range, the IETF
// protocol assignments, the benchmarking range, the reserved 240/4 and the
// broadcast address, the IPv4-compatible IPv6 range (::a.b.c.d), and the
// old IPv6 site-local range.
var internalPrefixes = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("192.0.0.0/24"),
	netip.MustParsePrefix("198.18.0.0/15"),
	netip.MustParsePrefix("240.0.0.0/4"),
	netip.MustParsePrefix("::/96"),
	netip.MustParsePrefix("fec0::/10"),
}

// embeddedIPv4 are the IPv6 ranges that carry an IPv4 address and lead to
// it: NAT64 (64:ff9b::/96, the address in the last 32 bits) and 6to4
// (2002::/16, the address in bits 16 to 48).
var (
	nat64  = netip.MustParsePrefix("64:ff9b::/96")
	sixTo4 = netip.MustParsePrefix("2002::/16")
)

// internal says whether an address is loopback, private, link-local,
// unspecified, multicast or in internalPrefixes; an IPv4 address written
// as IPv6, or carried in a NAT64 or 6to4 address, is judged as IPv4.
func internal(a netip.Addr) bool {
	a = a.Unmap()
	if b := a.As16(); nat64.Contains(a) {
		a = netip.AddrFrom4([4]byte(b[12:16]))
	} else if sixTo4.Contains(a) {
		a = netip.AddrFrom4([4]byte(b[2:6]))
	}
	if a.IsLoopback() || a.IsPrivate() || a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() ||
		a.IsInterfaceLocalMulticast() || a.IsMulticast() || a.IsUnspecified() {
		return true
	}
	for _, p := range internalPrefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// CheckSecret says whether a secret has the Standard Webhooks form:
// "whsec_" and the standard base64 of 24 to 64 bytes. Its error is
// KindInvalid and never holds the secret.
func CheckSecret(secret string) error {
	const how = `give "whsec_" and the base64 of 24 to 64 random bytes, such as "whsec_$(openssl rand -base64 32)"`
	if secret == "" {
		return order.Fail(order.ReasonInvalidPushConfig, "push_config.secret", "push_config.secret is required to sign the requests; %s", how)
	}
	key, ok := strings.CutPrefix(secret, secretPrefix)
	if !ok {
		return order.Fail(order.ReasonInvalidPushConfig, "push_config.secret", "push_config.secret does not start with %q; %s", secretPrefix, how)
	}
	b, err := base64.StdEncoding.DecodeString(key)
	if err != nil {
		return order.Fail(order.ReasonInvalidPushConfig, "push_config.secret", "push_config.secret after %q is not standard base64; %s", secretPrefix, how)
	}
	if len(b) < minSecretBytes || len(b) > maxSecretBytes {
		return order.Fail(order.ReasonInvalidPushConfig, "push_config.secret", "push_config.secret holds %d bytes; %s", len(b), how)
	}
	return nil
}

// dialer returns the dialer of push requests, with the policy's Control.
func (p Policy) dialer() *net.Dialer {
	return &net.Dialer{Timeout: dialTimeout, KeepAlive: dialKeepAlive, Control: p.Control}
}
