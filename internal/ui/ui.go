// Package ui serves the dashboard: one page, embedded in the binary, that
// shows the service live through its own REST API (GetStats, the watch,
// GetOrder, RedriveDeadLetters). It needs nothing from the internet.
//
// The page itself holds no data, so it is served to anyone; every number it
// shows comes from the API, which checks the caller's token as it checks
// any other caller's. With tokens set, the page asks for one, keeps it in
// the tab's sessionStorage and sends it as a bearer token.
package ui

import (
	"embed"
	"io/fs"
	"net/http"
)

//go:embed static
var static embed.FS

// Prefix is the path the dashboard is served under.
const Prefix = "/ui/"

// securityHeaders go on every response of the dashboard. The content
// security policy lets the page load and call nothing but its own origin
// (no inline script, no other host), and be framed by no other page, so
// that its redrive button cannot be clicked through someone else's.
var securityHeaders = map[string]string{
	"Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
		"frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
	"X-Content-Type-Options": "nosniff",
	"Referrer-Policy":        "no-referrer",
	"Cache-Control":          "no-cache",
}

// Handler serves the dashboard's files under Prefix, and redirects the
// prefix without its slash to it.
func Handler() http.Handler {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the embedded tree always has it
	}
	files := http.StripPrefix(Prefix[:len(Prefix)-1], http.FileServerFS(sub))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "the dashboard is read with GET", http.StatusMethodNotAllowed)
			return
		}
		if r.URL.Path == Prefix[:len(Prefix)-1] {
			http.Redirect(w, r, Prefix, http.StatusMovedPermanently)
			return
		}
		for k, v := range securityHeaders {
			w.Header().Set(k, v)
		}
		files.ServeHTTP(w, r)
	})
}
