package memstore_test

import (
	"testing"
	"time"

	"github.com/orderexpiry/orderexpiry/internal/memstore"
	"github.com/orderexpiry/orderexpiry/internal/storetest"
)

var _ storetest.Store = (*memstore.Store)(nil)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T, retention time.Duration) storetest.Store {
		return memstore.New(retention)
	})
}
