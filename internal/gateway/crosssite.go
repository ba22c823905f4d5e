package gateway

import (
	"mime"
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// CrossSite says which requests from web pages the HTTP port takes when no
// bearer token protects it. A browser sends a page's cookieless requests to
// any address, localhost included; without a token to check, the port
// tells them by their Origin and Host headers.
type CrossSite struct {
	// Check turns the checks on: the server sets it when no bearer token
	// is set.
	Check bool
	// AllowOrigins are the origins ("https://app.example.com") whose pages
	// may call, besides the port's own; "*" lets every origin in.
	AllowOrigins []string
	// AllowHosts are the Host names the port answers to, besides IP
	// addresses and localhost: "orderexpiry.internal", "*.example.com"
	// for the hosts under it, "*" for any.
	AllowHosts []string
}

// jsonOnly refuses a state-changing request (any method but GET, HEAD and
// OPTIONS) whose body is not declared as JSON, with 415. A web page can
// send text/plain or a form to any address without asking first (no CORS
// preflight), but not application/json; and the gateway would read either
// as JSON.
func jsonOnly(mux *runtime.ServeMux, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodGet, http.MethodHead, http.MethodOptions:
			h.ServeHTTP(w, r)
			return
		}
		ct := r.Header.Get("Content-Type")
		hasBody := r.ContentLength > 0 || len(r.TransferEncoding) > 0
		if ct == "" && !hasBody {
			h.ServeHTTP(w, r) // nothing to read: the fields come from the path
			return
		}
		if mt, _, err := mime.ParseMediaType(ct); err == nil && mt == "application/json" {
			h.ServeHTTP(w, r)
			return
		}
		refuse(mux, w, r, http.StatusUnsupportedMediaType, codes.InvalidArgument,
			"Content-Type %q is not accepted: send the request body as JSON, with Content-Type application/json", ct)
	})
}

// crossSite refuses, when cs.Check is on, a request whose Host is a name
// the port does not answer to (a page on a domain that resolves to this
// address: DNS rebinding), and one whose Origin is another site's, with
// 403. /healthz and /livez stay open: they tell nothing.
func crossSite(mux *runtime.ServeMux, cs CrossSite, h http.Handler) http.Handler {
	if !cs.Check {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" || r.URL.Path == "/livez" {
			h.ServeHTTP(w, r)
			return
		}
		if !cs.hostAllowed(r.Host) {
			refuse(mux, w, r, http.StatusForbidden, codes.PermissionDenied,
				"Host %q is refused: with no bearer token set, this service answers only to IP addresses, localhost and the names in -allow-hosts (a page on another name that resolves here could call it); add the name there, or set tokens (AUTH_TOKENS)", r.Host)
			return
		}
		if o := r.Header.Get("Origin"); o != "" && !cs.originAllowed(o, r.Host) {
			refuse(mux, w, r, http.StatusForbidden, codes.PermissionDenied,
				"a request from the web origin %q is refused: with no bearer token set, this service takes calls from pages of its own origin only; list the origin in -allow-origins, or set tokens (AUTH_TOKENS)", o)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// hostAllowed says whether the port answers to a Host header: an IP
// address, localhost (and names under it), or one of AllowHosts; the port
// does not matter.
func (cs CrossSite) hostAllowed(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.ToLower(strings.TrimSuffix(strings.Trim(host, "[]"), "."))
	if net.ParseIP(host) != nil || host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	for _, a := range cs.AllowHosts {
		a = strings.ToLower(a)
		if a == "*" || a == host {
			return true
		}
		if suffix, ok := strings.CutPrefix(a, "*"); ok && strings.HasPrefix(suffix, ".") && strings.HasSuffix(host, suffix) {
			return true
		}
	}
	return false
}

// originAllowed says whether a page of origin may call: the port's own
// origin (the same host and port as the request's Host), or one of
// AllowOrigins.
func (cs CrossSite) originAllowed(origin, host string) bool {
	for _, a := range cs.AllowOrigins {
		if a == "*" || strings.EqualFold(strings.TrimSuffix(a, "/"), origin) {
			return true
		}
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return false // "null" (a sandboxed page, a file) and the like
	}
	return strings.EqualFold(withPort(u.Host, u.Scheme), withPort(host, u.Scheme))
}

// withPort adds a scheme's default port to a host that has none.
func withPort(host, scheme string) string {
	if _, _, err := net.SplitHostPort(host); err == nil {
		return host
	}
	port := "80"
	if scheme == "https" {
		port = "443"
	}
	return net.JoinHostPort(strings.Trim(host, "[]"), port)
}

// refuse answers a request with an error of the gateway's usual shape.
func refuse(mux *runtime.ServeMux, w http.ResponseWriter, r *http.Request, httpStatus int, code codes.Code, format string, args ...any) {
	_, outbound := runtime.MarshalerForRequest(mux, r)
	runtime.HTTPError(r.Context(), mux, outbound, w, r, &runtime.HTTPStatusError{HTTPStatus: httpStatus, Err: status.Errorf(code, format, args...)})
}
