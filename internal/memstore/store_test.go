package memstore_test

import (
	"testing"
	"time"

	"github.com/orderexpiry/orderexpiry/internal/memstore"
	"github.com/orderexpiry/orderexpiry/internal/order"
	"github.com/orderexpiry/orderexpiry/internal/storetest"
)

var _ order.Store = (*memstore.Store)(nil)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T, retention time.Duration) order.Store {
		return memstore.New(memstore.Options{Retention: retention})
	})
}
