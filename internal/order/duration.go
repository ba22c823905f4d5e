package order

import (
	"strings"
	"time"
)

// FormatDuration is how every message of the service writes a duration:
// Go's form without its zero units ("15m", "1h30m", "100ms", "2.5s"), which
// the REST API, grpcurl and the server's flags all read back as written.
// (time.Duration's own String writes "15m0s" and "1h0m0s".)
func FormatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
