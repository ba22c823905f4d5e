package push

import (
	"cmp"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/orderexpiry/orderexpiry/internal/order"
)

func TestCheckURL(t *testing.T) {
	strict := Policy{AllowHosts: []string{"hooks.example.com", "*.example.org", "203.0.113.7", "10.0.0.1", "[::1]"}}
	loose := Policy{AllowHosts: []string{"*"}, AllowPrivate: true, AllowHTTP: true}
	tests := []struct {
		p       Policy
		url     string
		wantErr string // a substring of the error; empty: allowed
		// reason is the error's reason; empty: INVALID_PUSH_CONFIG.
		reason order.ErrorReason
	}{
		{strict, "https://hooks.example.com/expired", "", ""},
		{strict, "https://HOOKS.example.com:8443/x?y=1", "", ""},
		{strict, "https://a.b.example.org/", "", ""},
		{strict, "https://203.0.113.7/", "", ""},
		{strict, "https://example.org/", `host "example.org" is not in this service's allowed push hosts (hooks.example.com,*.example.org,203.0.113.7,10.0.0.1,[::1]); use one`, order.ReasonPushHostNotAllowed},
		{strict, "https://evil.example.com/", "use one of them, or add it there", order.ReasonPushHostNotAllowed},
		{strict, "https://hooks.example.com.evil.net/", "not in this service's allowed push hosts", order.ReasonPushHostNotAllowed},
		{strict, "http://hooks.example.com/", "start the service allowing http push URLs", order.ReasonPushHTTPNotAllowed},
		{strict, "ftp://hooks.example.com/", `scheme "ftp"`, ""},
		{strict, "https://10.0.0.1/", "start the service allowing private push addresses", order.ReasonPushPrivateNotAllowed},
		{strict, "https://[::1]:9/", "loopback, private or link-local", order.ReasonPushPrivateNotAllowed},
		{strict, "https://user:pw@hooks.example.com/", "user name or password", ""},
		{strict, "https://hooks.example.com/#frag", "fragment", ""},
		{strict, "https://hooks.example.com/a b", "percent-encode", ""},
		{strict, "/relative", "not an absolute URL", ""},
		{strict, "", "is required", ""},
		{strict, "https://hooks.example.com/" + strings.Repeat("a", 3000), "more than 2048", ""},
		{Policy{}, "https://hooks.example.com/", "push delivery is off", order.ReasonPushDisabled},
		{Policy{}, "http://127.0.0.1:18082/expired", "push delivery is off", order.ReasonPushDisabled},
		{loose, "http://127.0.0.1:99999/x", `port "99999"`, ""},
		{loose, "http://127.0.0.1:0/x", `port "0"`, ""},
		{loose, "http://127.0.0.1:8080/hook", "", ""},
		{loose, "https://169.254.169.254/latest/meta-data", "", ""},
	}
	for _, tt := range tests {
		_, err := tt.p.CheckURL(tt.url)
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("CheckURL(%q) = %v, want it allowed", tt.url, err)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("CheckURL(%q) = %v, want an error with %q", tt.url, err, tt.wantErr)
		case err != nil && order.KindOf(err) != order.KindInvalid:
			t.Errorf("CheckURL(%q): kind %v, want KindInvalid", tt.url, order.KindOf(err))
		case err != nil && strings.Contains(err.Error(), "-push-"):
			t.Errorf("CheckURL(%q) = %v: it names a flag, which is the server's to add", tt.url, err)
		}
		if want := cmp.Or(tt.reason, order.ReasonInvalidPushConfig); err != nil && order.ReasonOf(err) != want {
			t.Errorf("CheckURL(%q): reason %s, want %s", tt.url, order.ReasonOf(err), want)
		}
	}
}

func TestControlRefusesInternalAddresses(t *testing.T) {
	for _, tt := range []struct {
		addr     string
		internal bool
	}{
		{"127.0.0.1:80", true}, {"[::1]:80", true}, {"10.1.2.3:443", true}, {"172.16.0.1:443", true},
		{"192.168.1.1:443", true}, {"169.254.169.254:80", true}, {"[fe80::1]:80", true}, {"[fc00::1]:80", true},
		{"0.0.0.0:80", true}, {"[::]:80", true}, {"100.64.0.1:80", true}, {"[::ffff:127.0.0.1]:80", true},
		{"224.0.0.1:80", true}, {"203.0.113.7:443", false}, {"[2001:db8::1]:443", false}, {"8.8.8.8:443", false},
		// IPv4 carried in IPv6 (NAT64, 6to4, IPv4-compatible), and the
		// IPv4 ranges that lead to no public host.
		{"[64:ff9b::a00:1]:443", true}, {"[2002:a00:1::1]:443", true}, {"[::7f00:1]:443", true},
		{"[64:ff9b::808:808]:443", false}, {"[2002:808:808::1]:443", false},
		{"198.18.0.1:443", true}, {"192.0.0.1:443", true}, {"240.0.0.1:443", true}, {"255.255.255.255:443", true},
	} {
		err := Policy{}.Control("tcp", tt.addr, nil)
		if got := errors.Is(err, errInternalAddress); got != tt.internal {
			t.Errorf("Control(%s) = %v; want refused %v", tt.addr, err, tt.internal)
		}
		if err := (Policy{AllowPrivate: true}).Control("tcp", tt.addr, nil); err != nil {
			t.Errorf("Control(%s) with AllowPrivate = %v, want nil", tt.addr, err)
		}
	}
}

// TestDialRefusesAfterDNS checks the refusal where it matters: a host name
// (localhost) that the URL check cannot judge resolves to loopback, and the
// connection is refused after DNS, at dial time.
func TestDialRefusesAfterDNS(t *testing.T) {
	p := Policy{AllowHosts: []string{"localhost"}, AllowHTTP: true}
	if _, err := p.CheckURL("http://localhost:1/"); err != nil {
		t.Fatalf("CheckURL(localhost) = %v, want it allowed: a name is judged at dial time", err)
	}
	_, err := p.dialer().DialContext(t.Context(), "tcp", "localhost:1")
	if !errors.Is(err, errInternalAddress) {
		t.Errorf("dial localhost = %v, want the internal address refused", err)
	}
	if netip.MustParseAddr("127.0.0.1").IsLoopback() != internal(netip.MustParseAddr("127.0.0.1")) {
		t.Errorf("internal(127.0.0.1) disagrees with IsLoopback")
	}
}

func TestCheckSecret(t *testing.T) {
	for _, tt := range []struct {
		secret, wantErr string
	}{
		{"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", ""},
		{"", "is required"},
		{"MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", `does not start with "whsec_"`},
		{"whsec_not base64!", "not standard base64"},
		{"whsec_c2hvcnQ=", "holds 5 bytes"},
	} {
		err := CheckSecret(tt.secret)
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("CheckSecret(%q) = %v, want nil", tt.secret, err)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("CheckSecret(%q) = %v, want an error with %q", tt.secret, err, tt.wantErr)
		case err != nil && len(tt.secret) > 8 && strings.Contains(err.Error(), tt.secret):
			t.Errorf("CheckSecret(%q): the error %q shows the secret", tt.secret, err)
		}
	}
}

func TestBackoff(t *testing.T) {
	ack := 4 * time.Second
	for attempt, want := range map[int]time.Duration{1: firstRetry, 2: 2 * firstRetry, 3: 4 * firstRetry, 4: ack, 20: ack, 100: ack} {
		for range 100 {
			if d := Backoff(attempt, ack); d > want || d < want/2 {
				t.Fatalf("Backoff(%d, %s) = %s, want from %s to %s", attempt, ack, d, want/2, want)
			}
		}
	}
	seen := map[time.Duration]bool{}
	for range 20 {
		seen[Backoff(3, ack)] = true
	}
	if len(seen) < 2 {
		t.Errorf("Backoff(3) gave %v in 20 calls: no jitter", seen)
	}
}
