package server

import (
	"net/http"
	"net/http/pprof"
	"net/url"
	"os"
	"strings"
)

// debugHandler serves the runtime profiles of net/http/pprof, with the
// command line's passwords redacted.
func debugHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// cmdline serves the command line as pprof.Cmdline does (arguments
// separated by NUL bytes), with the password of every URL in it replaced
// by xxxxx: -redis-url, -redis-cluster-addrs and -redis-sentinel-addrs may
// carry one.
func cmdline(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	args := make([]string, len(os.Args))
	for i, a := range os.Args {
		args[i] = redactArg(a)
	}
	_, _ = w.Write([]byte(strings.Join(args, "\x00")))
}

// redactArg redacts the password of a URL in a argument, alone or as a
// flag's value (-redis-url=redis://…).
func redactArg(a string) string {
	i := strings.Index(a, "://")
	if i < 0 {
		return a
	}
	// The URL starts after the flag's "=", if any, before the scheme.
	start := strings.LastIndex(a[:i], "=") + 1
	u, err := url.Parse(a[start:])
	if err != nil {
		// A URL that does not parse may still hold a password: drop all
		// of it rather than guess.
		return a[:start] + "xxxxx"
	}
	return a[:start] + u.Redacted()
}
