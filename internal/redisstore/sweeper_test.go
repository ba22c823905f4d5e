package redisstore

import "testing"

func TestMergeNotifyFlags(t *testing.T) {
	tests := []struct {
		name, flags, want string
	}{
		{"off", "", "Ex"},
		{"all events already", "KEA", "KEA"},
		{"keyspace generic only", "Kg", "KgEx"},
		{"exactly what is needed", "Ex", "Ex"},
		{"all keyspace events", "AK", "AKE"},
		{"keyevent without expired", "Eg", "Egx"},
		{"expired without keyevent", "Kx", "KxE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := mergeNotifyFlags(tt.flags); got != tt.want {
				t.Errorf("mergeNotifyFlags(%q) = %q, want %q", tt.flags, got, tt.want)
			}
		})
	}
}
