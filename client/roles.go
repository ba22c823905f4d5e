package client

import (
	"context"
	"iter"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"

	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// The roles of the methods of Client: each RPC and each of Client's own
// loops is in exactly one of them (TestRoles checks it).
var (
	_ Producer  = (*Client)(nil)
	_ Consumer  = (*Client)(nil)
	_ Inspector = (*Client)(nil)
)

// Producer is what a service that checks orders out and closes them uses.
type Producer interface {
	Checkout(ctx context.Context, in *pb.CheckoutRequest, opts ...grpc.CallOption) (*pb.CheckoutResponse, error)
	BatchCheckout(ctx context.Context, in *pb.BatchCheckoutRequest, opts ...grpc.CallOption) (*pb.BatchCheckoutResponse, error)
	CompleteOrder(ctx context.Context, in *pb.CompleteOrderRequest, opts ...grpc.CallOption) (*pb.Order, error)
	CancelOrder(ctx context.Context, in *pb.CancelOrderRequest, opts ...grpc.CallOption) (*pb.Order, error)
	RescheduleOrder(ctx context.Context, in *pb.RescheduleOrderRequest, opts ...grpc.CallOption) (*pb.Order, error)
	BulkChangeOrders(ctx context.Context, in *pb.BulkChangeOrdersRequest, opts ...grpc.CallOption) (*pb.Operation, error)
	CancelOperation(ctx context.Context, in *pb.CancelOperationRequest, opts ...grpc.CallOption) (*pb.Operation, error)
	WaitOperation(ctx context.Context, name string, poll time.Duration) (*pb.Operation, error)
}

// Consumer is what a watcher or a worker of a consumer group uses: Watch
// and Consume, the RPCs under them, and the groups' management.
type Consumer interface {
	Watch(ctx context.Context, after string, handle func(*pb.ExpirationEvent) error) error
	Consume(ctx context.Context, group string, opts ConsumeOptions, handle func(ctx context.Context, ev *pb.ExpirationEvent) error) error
	WatchExpirations(ctx context.Context, in *pb.WatchExpirationsRequest, opts ...grpc.CallOption) (grpc.ServerStreamingClient[pb.ExpirationEvent], error)
	ConsumeExpirations(ctx context.Context, in *pb.ConsumeExpirationsRequest, opts ...grpc.CallOption) (grpc.ServerStreamingClient[pb.ReceivedExpiration], error)
	PullExpirations(ctx context.Context, in *pb.PullExpirationsRequest, opts ...grpc.CallOption) (*pb.PullExpirationsResponse, error)
	AcknowledgeExpirations(ctx context.Context, in *pb.AcknowledgeExpirationsRequest, opts ...grpc.CallOption) (*pb.AcknowledgeExpirationsResponse, error)
	NackExpirations(ctx context.Context, in *pb.NackExpirationsRequest, opts ...grpc.CallOption) (*pb.NackExpirationsResponse, error)
	CreateConsumerGroup(ctx context.Context, in *pb.CreateConsumerGroupRequest, opts ...grpc.CallOption) (*pb.ConsumerGroup, error)
	DeleteConsumerGroup(ctx context.Context, in *pb.DeleteConsumerGroupRequest, opts ...grpc.CallOption) (*emptypb.Empty, error)
	RedriveDeadLetters(ctx context.Context, in *pb.RedriveDeadLettersRequest, opts ...grpc.CallOption) (*pb.RedriveDeadLettersResponse, error)
}

// Inspector is what a dashboard, a report or an operator reads with: it
// changes nothing.
type Inspector interface {
	GetOrder(ctx context.Context, in *pb.GetOrderRequest, opts ...grpc.CallOption) (*pb.Order, error)
	ListOrders(ctx context.Context, in *pb.ListOrdersRequest, opts ...grpc.CallOption) (*pb.ListOrdersResponse, error)
	Orders(ctx context.Context, req *pb.ListOrdersRequest, opts ...grpc.CallOption) iter.Seq2[*pb.Order, error]
	GetConsumerGroup(ctx context.Context, in *pb.GetConsumerGroupRequest, opts ...grpc.CallOption) (*pb.ConsumerGroup, error)
	ListConsumerGroups(ctx context.Context, in *pb.ListConsumerGroupsRequest, opts ...grpc.CallOption) (*pb.ListConsumerGroupsResponse, error)
	ListDeadLetters(ctx context.Context, in *pb.ListDeadLettersRequest, opts ...grpc.CallOption) (*pb.ListDeadLettersResponse, error)
	GetOperation(ctx context.Context, in *pb.GetOperationRequest, opts ...grpc.CallOption) (*pb.Operation, error)
	ListOperations(ctx context.Context, in *pb.ListOperationsRequest, opts ...grpc.CallOption) (*pb.ListOperationsResponse, error)
	Operations(ctx context.Context) iter.Seq2[*pb.Operation, error]
	GetStats(ctx context.Context, in *pb.GetStatsRequest, opts ...grpc.CallOption) (*pb.Stats, error)
}
