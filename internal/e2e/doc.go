// Package e2e tests the server as its users meet it: the real binary, built
// from cmd/server and started as a process, called through its gRPC and REST
// ports, on the embedded store and on a real redis-server.
package e2e
