// Package client is a Go client of the orderexpiry service.
//
// Dial opens a client; the generated OrderServiceClient is embedded in it,
// so that every RPC is a method of the client, and the loops and iterators
// below are added to them. The messages are those of the generated package
// github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1. The methods fall
// into three roles, each an interface that *Client satisfies, for code that
// plays one role only (and for its fakes in tests).
//
// # Producer: checking orders out and closing them
//
// Checkout and BatchCheckout create pending orders; CompleteOrder,
// CancelOrder and RescheduleOrder change one; BulkChangeOrders changes
// those a filter matches, as an operation that WaitOperation waits for and
// CancelOperation stops.
//
// # Consumer: taking the expirations
//
//   - Watch follows every expiration, in the log's order, and resumes after
//     the last one its handler returned from whenever the stream ends (the
//     server restarts, the connection breaks, the watcher fell behind), with
//     backoff; it returns when the handler fails or the context ends.
//   - Consume takes a consumer group's expirations, shared by the group's
//     consumers (each is with one of them at a time, delivered at least
//     once), with ConsumeOptions.Concurrency handlers at once: it
//     acknowledges an expiration whose handler returned nil and hands it
//     back, to be delivered again, when the handler failed. Each handler's
//     context ends at its delivery's ack deadline.
//
// CreateConsumerGroup, DeleteConsumerGroup and RedriveDeadLetters manage
// the groups; WatchExpirations, ConsumeExpirations, PullExpirations,
// AcknowledgeExpirations and NackExpirations are the RPCs under the loops.
//
// # Inspector: reading the state
//
// GetOrder and Orders (an iterator over ListOrders' pages) read orders;
// GetConsumerGroup, ListConsumerGroups and ListDeadLetters the groups;
// GetOperation and Operations (an iterator over ListOperations) the bulk
// operations; GetStats the service's counts.
package client
