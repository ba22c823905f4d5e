// Package baseline holds the floors the benchmarks set the service beside:
// the least a gRPC service or a REST service can do to keep an order with an
// expiry in Redis. Its gRPC OrderService answers Checkout with one
// `SET NX PX` and GetOrder with one `GET`; its REST handler is the seeds'
// recipe: it decodes `{"id","expire"}` with encoding/json and does one
// `SETNX` with an expiry, and reads an order with one `GET`. Neither
// validates more than it must, keeps an index of deadlines or tells anyone
// when an order expires: that is what makes them floors. cmd/bench/baseline
// runs them as a process of their own, so that /proc counts their CPU apart
// from the load generator's.
package baseline

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// keyPrefix is put before an order's id to make its key, as the seeds'
// recipe does.
const keyPrefix = "order:"

// Serve runs the gRPC baseline on grpcLis and the REST baseline on httpLis
// until ctx ends, with rdb as the Redis client of both.
func Serve(ctx context.Context, rdb *redis.Client, grpcLis, httpLis net.Listener) error {
	gs := NewGRPCServer(rdb)
	hs := &http.Server{Handler: Handler(rdb), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 2)
	go func() { errc <- gs.Serve(grpcLis) }()
	go func() { errc <- hs.Serve(httpLis) }()
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	gs.Stop()
	_ = hs.Close()
	return err
}

// NewGRPCServer returns a gRPC server with the baseline OrderService on rdb.
func NewGRPCServer(rdb *redis.Client) *grpc.Server {
	gs := grpc.NewServer()
	pb.RegisterOrderServiceServer(gs, &orders{rdb: rdb})
	return gs
}

// orders is the gRPC baseline: Checkout and GetOrder, one Redis command
// each; every other method answers Unimplemented.
type orders struct {
	pb.UnimplementedOrderServiceServer
	rdb *redis.Client
}

// Checkout stores the order's deadline (Unix milliseconds) under its key
// with `SET key deadline NX PX ttl`.
func (o *orders) Checkout(ctx context.Context, req *pb.CheckoutRequest) (*pb.CheckoutResponse, error) {
	ttl := req.GetTtl().AsDuration()
	if req.GetOrderId() == "" || ttl < time.Millisecond {
		return nil, status.Error(codes.InvalidArgument, "order_id must be set and ttl be at least 1ms")
	}
	deadline := time.Now().Add(ttl)
	created, err := o.rdb.SetNX(ctx, keyPrefix+req.GetOrderId(), deadline.UnixMilli(), ttl).Result()
	if err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	return &pb.CheckoutResponse{Created: created, Order: &pb.Order{
		OrderId: req.GetOrderId(), Status: pb.OrderStatus_ORDER_STATUS_PENDING, Deadline: timestamppb.New(deadline)}}, nil
}

// GetOrder reads the order's deadline with one `GET`.
func (o *orders) GetOrder(ctx context.Context, req *pb.GetOrderRequest) (*pb.Order, error) {
	v, err := o.rdb.Get(ctx, keyPrefix+req.GetOrderId()).Int64()
	switch {
	case errors.Is(err, redis.Nil):
		return nil, status.Errorf(codes.NotFound, "no order %q", req.GetOrderId())
	case err != nil:
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	return &pb.Order{OrderId: req.GetOrderId(), Status: pb.OrderStatus_ORDER_STATUS_PENDING, Deadline: timestamppb.New(time.UnixMilli(v))}, nil
}

// CheckoutBody is what the REST baseline's POST /v1/orders decodes: the
// order's id and its expiry in seconds.
type CheckoutBody struct {
	ID     string `json:"id"`
	Expire int64  `json:"expire"`
}

// orderBody is what the REST baseline answers: the order's id and deadline
// (Unix milliseconds).
type orderBody struct {
	ID       string `json:"id"`
	Deadline int64  `json:"deadline"`
}

// Handler is the REST baseline, the seeds' recipe on net/http:
// POST /v1/orders ({"id","expire"}: 200, or 409 when the id is taken),
// GET /v1/orders/{id} (200 or 404), and GET /healthz.
func Handler(rdb *redis.Client) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	mux.HandleFunc("POST /v1/orders", func(w http.ResponseWriter, r *http.Request) {
		var b CheckoutBody
		if err := json.NewDecoder(r.Body).Decode(&b); err != nil || b.ID == "" || b.Expire <= 0 {
			http.Error(w, `want a JSON body {"id": "…", "expire": seconds > 0}`, http.StatusBadRequest)
			return
		}
		ttl := time.Duration(b.Expire) * time.Second
		deadline := time.Now().Add(ttl).UnixMilli()
		created, err := rdb.SetNX(r.Context(), keyPrefix+b.ID, deadline, ttl).Result()
		switch {
		case err != nil:
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
		case !created:
			http.Error(w, "order "+strconv.Quote(b.ID)+" exists", http.StatusConflict)
		default:
			writeJSON(w, orderBody{ID: b.ID, Deadline: deadline})
		}
	})
	mux.HandleFunc("GET /v1/orders/{id}", func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		v, err := rdb.Get(r.Context(), keyPrefix+id).Int64()
		switch {
		case errors.Is(err, redis.Nil):
			http.Error(w, "no order "+strconv.Quote(id), http.StatusNotFound)
		case err != nil:
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
		default:
			writeJSON(w, orderBody{ID: id, Deadline: v})
		}
	})
	return mux
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}
