// Package e2e tests the server as its users meet it, called through its
// gRPC and REST ports, on the embedded store and on a real redis-server.
// Most tests run the real server in the test process, built from the same
// flags and environment variables as the binary on listeners of 127.0.0.1:0;
// those that need what only a process shows (a signal, a kill, an exit code,
// the serving line, its PID, memory or goroutines) run the binary built from
// cmd/server as a child process (startProcess).
package e2e
