package server

import "testing"

func TestRedactArg(t *testing.T) {
	tests := []struct{ in, want string }{
		{"-redis-url=redis://:s3cret@127.0.0.1:6379/0", "-redis-url=redis://:xxxxx@127.0.0.1:6379/0"},
		{"redis://user:s3cret@h:1", "redis://user:xxxxx@h:1"},
		{"--redis-cluster-addrs=rediss://u:pw@h:1?addr=h:2", "--redis-cluster-addrs=rediss://u:xxxxx@h:1?addr=h:2"},
		{"redis://h:1", "redis://h:1"},
		{"-grpc-addr=:9090", "-grpc-addr=:9090"},
		{"-redis-url=redis://:pw@h:1/%zz", "-redis-url=xxxxx"},
	}
	for _, tt := range tests {
		if got := redactArg(tt.in); got != tt.want {
			t.Errorf("redactArg(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
