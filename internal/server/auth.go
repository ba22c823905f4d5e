package server

import (
	"net/url"
	"slices"
	"strings"

	"github.com/orderexpiry/orderexpiry/internal/auth"
)

// AuthConfig says who may call: the accepted bearer tokens, what needs
// none, and, when no token is set, which web pages may call the HTTP port
// (see gateway.CrossSite).
type AuthConfig struct {
	// Tokens are the accepted bearer tokens; none means authentication is
	// off.
	Tokens []string
	// Open names what needs no token, from openables.
	Open map[string]bool
	// AllowOrigins and AllowHosts widen what the HTTP port takes from web
	// pages when no token is set: the origins of pages that may call, and
	// the Host names answered besides IP addresses and localhost.
	AllowOrigins, AllowHosts []string
}

// openables are the names -auth-open accepts.
var openables = []string{"health", "reflection", "metrics", "openapi"}

func (c *AuthConfig) register(o *options) {
	o.Text("auth-tokens-file", "AUTH_TOKENS_FILE", "", "file of accepted bearer tokens, one a line; with $AUTH_TOKENS (comma-separated) and none given, authentication is off")
	o.SecretText("AUTH_TOKENS", "accepted bearer tokens, comma-separated, besides those of -auth-tokens-file; no flag, so that they stay off the command line")
	o.Text("auth-open", "AUTH_OPEN", "health,metrics,openapi", "what needs no token, from "+strings.Join(openables, ", ")+"; empty: everything needs one")
	o.Text("allow-origins", "ALLOW_ORIGINS", "", "with no bearer token set: origins of web pages that may call the HTTP port besides its own, comma-separated (https://app.example.com), * for any")
	o.Text("allow-hosts", "ALLOW_HOSTS", "", "with no bearer token set: Host names the HTTP port answers to besides IP addresses and localhost, comma-separated (orderexpiry.internal, *.example.com), * for any")
}

// parse reads the lists and the tokens (from AUTH_TOKENS and the tokens
// file), refusing a name, origin or host that is not one.
func (c *AuthConfig) parse(o *options) error {
	c.Open = map[string]bool{}
	for _, name := range splitList(o.text("auth-open")) {
		if !slices.Contains(openables, name) {
			return optionErrorf("auth-open", "unknown %q; want some of %s", name, strings.Join(openables, ", "))
		}
		c.Open[name] = true
	}
	for _, origin := range splitList(o.text("allow-origins")) {
		if u, err := url.Parse(origin); origin != "*" && (err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/")) {
			return optionErrorf("allow-origins", "%q is not an origin; give scheme://host[:port] such as https://app.example.com, or *", origin)
		}
		c.AllowOrigins = append(c.AllowOrigins, origin)
	}
	for _, h := range splitList(o.text("allow-hosts")) {
		if strings.ContainsAny(h, "/@ ") {
			return optionErrorf("allow-hosts", "%q is not a host name; give names such as orderexpiry.internal or *.example.com, without scheme or path", h)
		}
		c.AllowHosts = append(c.AllowHosts, h)
	}
	tokens, err := auth.LoadTokens(o.text("auth-tokens-file"), o.text("AUTH_TOKENS"))
	if err != nil {
		return err
	}
	c.Tokens = tokens
	return nil
}

// splitList returns the items of a comma-separated list, trimmed, without
// empty ones.
func splitList(list string) []string {
	var out []string
	for _, v := range strings.Split(list, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}
