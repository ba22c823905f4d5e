package ui

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestHandler checks what the dashboard's handler answers: its files with
// their types and the security headers, a redirect to the prefix, 404 for
// a file it does not have, and 405 for a method other than GET or HEAD.
func TestHandler(t *testing.T) {
	h := Handler()
	tests := []struct {
		method, path string
		status       int
		contentType  string
		body         string
	}{
		{"GET", "/ui/", http.StatusOK, "text/html; charset=utf-8", `<script src="app.js" defer></script>`},
		{"GET", "/ui/app.js", http.StatusOK, "text/javascript; charset=utf-8", "/v1/stats"},
		{"GET", "/ui/style.css", http.StatusOK, "text/css; charset=utf-8", ".counts"},
		{"HEAD", "/ui/", http.StatusOK, "text/html; charset=utf-8", ""},
		{"GET", "/ui", http.StatusMovedPermanently, "", ""},
		{"GET", "/ui/nope.js", http.StatusNotFound, "", ""},
		{"POST", "/ui/", http.StatusMethodNotAllowed, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(tt.method, tt.path, nil))
			if rec.Code != tt.status {
				t.Fatalf("status %d, want %d", rec.Code, tt.status)
			}
			if tt.status == http.StatusMovedPermanently && rec.Header().Get("Location") != Prefix {
				t.Errorf("Location %q, want %q", rec.Header().Get("Location"), Prefix)
			}
			if tt.status != http.StatusOK {
				return
			}
			if got := rec.Header().Get("Content-Type"); got != tt.contentType {
				t.Errorf("Content-Type %q, want %q", got, tt.contentType)
			}
			for k, v := range securityHeaders {
				if got := rec.Header().Get(k); got != v {
					t.Errorf("%s %q, want %q", k, got, v)
				}
			}
			if !strings.Contains(rec.Body.String(), tt.body) {
				t.Errorf("body does not hold %q", tt.body)
			}
		})
	}
}
