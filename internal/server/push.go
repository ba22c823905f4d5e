package server

import (
	"net"
	"strings"

	"github.com/orderexpiry/orderexpiry/internal/push"
)

// PushConfig says which endpoints push groups may name (see push.Policy):
// with no allowed host, push delivery is off and this replica runs no
// deliverer.
type PushConfig struct {
	push.Policy
}

func (c *PushConfig) register(o *options) {
	o.Text("push-allow-hosts", "PUSH_ALLOW_HOSTS", "", "hosts push groups may POST to, comma-separated: a name or IP as in the URL, *.example.com for the hosts under it, * for any; empty: push delivery is off")
	o.Bool(&c.AllowPrivate, "push-allow-private", "PUSH_ALLOW_PRIVATE", "let push endpoints be at loopback, private or link-local addresses (checked after DNS, at every connection); off: refused")
	o.Bool(&c.AllowHTTP, "push-allow-http", "PUSH_ALLOW_HTTP", "let push URLs be http://; off: https only")
}

// parse reads the allowed hosts: names or IPs as a URL writes them, without
// scheme, port or path.
func (c *PushConfig) parse(o *options) error {
	for _, h := range splitList(o.text("push-allow-hosts")) {
		if strings.ContainsAny(h, "/:@ ") && !strings.HasPrefix(h, "[") && net.ParseIP(h) == nil {
			return optionErrorf("push-allow-hosts", "%q is not a host; give names such as hooks.example.com or *.example.com, without scheme, port or path", h)
		}
		c.AllowHosts = append(c.AllowHosts, h)
	}
	return nil
}
