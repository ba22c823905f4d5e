package server

import (
	"strings"
	"testing"
)

// TestErrorSettingsAreFlags: every flag an error names is a flag of this
// server, so that a renamed flag cannot leave messages naming the old one.
func TestErrorSettingsAreFlags(t *testing.T) {
	table := FlagTable()
	for reason, flag := range errorSettings {
		if !strings.Contains(table, "| `"+flag+"` |") {
			t.Errorf("errorSettings[%s] = %q, which is not a flag of flags.go", reason, flag)
		}
	}
}
