package metrics

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// scrape returns /metrics as text.
func scrape(t *testing.T, m *Metrics) string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	b, err := io.ReadAll(rec.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestGroupSeriesGo: the series of a group leave /metrics when it is
// deleted through this replica (GroupDeleted), and at the next scrape when
// the store no longer lists it (deleted through another replica); those
// of the groups still listed stay, and none is dropped when the list could
// not be read.
func TestGroupSeriesGo(t *testing.T) {
	m := New()
	listed, ok := []string{"kept", "gone-here", "gone-there"}, true
	m.Watch(Sources{Watchers: func() int { return 0 }, Groups: func() ([]string, []GroupState, bool) { return listed, nil, ok }})
	for _, g := range listed {
		m.Delivered(g, 2)
		m.Acknowledged(g, time.Second)
		m.Pushed(g, "acked")
	}
	has := func(text, g string) bool { return strings.Contains(text, `group="`+g+`"`) }
	text := scrape(t, m)
	for _, g := range listed {
		if !has(text, g) {
			t.Fatalf("no series of %s at first", g)
		}
	}
	m.GroupDeleted("gone-here")
	listed = []string{"kept", "gone-there"}
	if text := scrape(t, m); has(text, "gone-here") || !has(text, "kept") {
		t.Errorf("after GroupDeleted: gone-here shown %v, kept shown %v", has(text, "gone-here"), has(text, "kept"))
	}
	listed, ok = nil, false
	if text := scrape(t, m); !has(text, "gone-there") {
		t.Error("series dropped on a scrape whose list of groups failed")
	}
	listed, ok = []string{"kept"}, true
	scrape(t, m) // drops gone-there, which it may still show
	if text := scrape(t, m); has(text, "gone-there") || !has(text, "kept") {
		t.Errorf("once the store stopped listing it: gone-there shown %v, kept shown %v", has(text, "gone-there"), has(text, "kept"))
	}
}
