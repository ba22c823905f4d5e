package server

import (
	"context"
	"errors"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/orderexpiry/orderexpiry/internal/order"
	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// healthInterval is how often the health monitor pings the store. A ping
// is bounded by it too, though each store bounds its own calls tighter.
const healthInterval = time.Second

// setHealth reports status for the server as a whole and for OrderService.
func (s *Server) setHealth(status healthpb.HealthCheckResponse_ServingStatus) {
	s.health.SetServingStatus("", status)
	s.health.SetServingStatus(pb.OrderService_ServiceDesc.ServiceName, status)
}

// monitorHealth pings the store every healthInterval and reports the result
// through gRPC health and /healthz: NOT_SERVING while the store cannot
// serve, because it is unreachable or, for Redis, may evict its keys.
func (s *Server) monitorHealth(ctx context.Context) {
	tick := time.NewTicker(healthInterval)
	defer tick.Stop()
	first := true
	for {
		pctx, cancel := context.WithTimeout(ctx, healthInterval)
		err := s.store.Ping(pctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		ok := err == nil
		if !ok {
			reason := publicReason(err)
			s.notServing.Store(&reason)
		}
		if first || ok != s.serving.Load() {
			status := healthpb.HealthCheckResponse_SERVING
			if !ok {
				status = healthpb.HealthCheckResponse_NOT_SERVING
				s.log.Warn("the order store cannot serve: NOT_SERVING", "err", err)
			} else if !first {
				s.log.Info("the order store can serve again: SERVING")
			}
			s.serving.Store(ok)
			s.setHealth(status)
			if ok {
				select {
				case s.servingAgain <- struct{}{}:
				default:
				}
			}
			first = false
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// publicReason is what /healthz says of a failed ping: the message a
// domain error carries for callers (a setting to change, or that the store
// is unavailable), never the detail that names addresses.
func publicReason(err error) string {
	var oe *order.Error
	if errors.As(err, &oe) && oe.Msg != "" {
		return oe.Msg
	}
	return "the order store is unreachable"
}

// healthDetail are the fields /healthz adds to its status: the durability
// mode of a Redis store.
func healthDetail(durability string) map[string]string {
	if durability == "" {
		return nil
	}
	return map[string]string{"durability": durability}
}
