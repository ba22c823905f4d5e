package rpc

import (
	"context"
	"time"

	"github.com/orderexpiry/orderexpiry/internal/filter"
	pb "github.com/orderexpiry/orderexpiry/proto/orderexpiry/v1"
)

// ListOrders lists the orders that match a filter, a page at a time, by
// deadline. The page token is the position after the page, bound to the
// filter and order (see filter.EncodeToken).
func (s *Service) ListOrders(ctx context.Context, req *pb.ListOrdersRequest) (*pb.ListOrdersResponse, error) {
	size, err := pageSize(req.GetPageSize(), defaultPageSize)
	if err != nil {
		return nil, err
	}
	f, err := filter.Parse(req.GetFilter())
	if err != nil {
		return nil, err
	}
	desc, err := filter.ParseOrderBy(req.GetOrderBy())
	if err != nil {
		return nil, err
	}
	q := filter.Query{Filter: f, Desc: desc, PageSize: size}
	if t := req.GetPageToken(); t != "" {
		k, err := filter.DecodeToken(t, f, desc, time.Now())
		if err != nil {
			return nil, err
		}
		q.After = &k
	}
	page, err := s.store.List(ctx, q)
	if err != nil {
		return nil, err
	}
	resp := &pb.ListOrdersResponse{Orders: make([]*pb.Order, len(page.Orders))}
	for i, o := range page.Orders {
		resp.Orders[i] = toProto(o)
	}
	if page.Next != nil {
		resp.NextPageToken = filter.EncodeToken(*page.Next, f, desc, time.Now())
	}
	return resp, nil
}
