package server

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoadGroupsFile(t *testing.T) {
	for _, tc := range []struct {
		name, text, wantErr string
		groups              int
	}{
		{"yaml", "groups:\n  - group_id: pay\n    ack_deadline: 30s\n  - groupId: hook\n    pushConfig: {url: 'https://h.example.com/', secret: whsec_x}\n", "", 2},
		{"json", `{"groups": [{"group_id": "pay", "max_deliveries": 3}]}`, "", 1},
		{"empty list", "groups: []\n", "", 0},
		{"unknown field", "groups:\n  - group_id: pay\n    ack_dedline: 30s\n", `unknown field "ack_dedline"`, 0},
		{"unknown top key", "group:\n  - group_id: pay\n", `unknown field "group"`, 0},
		{"named twice", "groups:\n  - group_id: pay\n  - group_id: pay\n", `group "pay" is named twice`, 0},
		{"bad duration", "groups:\n  - group_id: pay\n    ack_deadline: soon\n", "groups[0]", 0},
		{"not yaml", "groups: [", "not YAML or JSON", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "groups.yaml")
			if err := os.WriteFile(path, []byte(tc.text), 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := loadGroupsFile(path)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one saying %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != tc.groups {
				t.Fatalf("%d groups, want %d", len(got), tc.groups)
			}
		})
	}
	path := filepath.Join(t.TempDir(), "groups.yaml")
	if err := os.WriteFile(path, []byte("groups:\n  - group_id: pay\n    ack_deadline: 30s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := loadGroupsFile(path)
	if err != nil || got[0].GetGroupId() != "pay" || got[0].GetAckDeadline().AsDuration() != 30*time.Second {
		t.Fatalf("%v, %v", got, err)
	}
}
