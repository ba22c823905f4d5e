package tracing

import (
	"context"
	"strings"
	"testing"

	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// TestSetupOff: without an exporter, or with tracing disabled, Setup
// installs nothing and says tracing is off.
func TestSetupOff(t *testing.T) {
	for name, vars := range map[string]map[string]string{
		"unset":    {},
		"none":     {"OTEL_TRACES_EXPORTER": "none"},
		"disabled": {"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "true"},
	} {
		t.Run(name, func(t *testing.T) {
			before := otel.GetTracerProvider()
			on, shutdown, err := Setup(context.Background(), env(vars))
			if err != nil || on {
				t.Fatalf("Setup = %v, %v; want off without an error", on, err)
			}
			if otel.GetTracerProvider() != before {
				t.Error("Setup installed a tracer provider with tracing off")
			}
			if err := shutdown(context.Background()); err != nil {
				t.Error(err)
			}
		})
	}
}

// TestSetupErrors: an exporter or a protocol Setup does not know is an
// error that names the variable and what it takes.
func TestSetupErrors(t *testing.T) {
	for vars, want := range map[[2]string]string{
		{"OTEL_TRACES_EXPORTER", "zipkin"}:               `OTEL_TRACES_EXPORTER names "zipkin": use otlp, console or none`,
		{"OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"}:     `OTEL_EXPORTER_OTLP_PROTOCOL is "http/json": use grpc or http/protobuf`,
		{"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "thrift"}: `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL is "thrift": use grpc or http/protobuf`,
	} {
		m := map[string]string{"OTEL_TRACES_EXPORTER": "otlp", vars[0]: vars[1]}
		on, _, err := Setup(context.Background(), env(m))
		if err == nil || on || !strings.Contains(err.Error(), want) {
			t.Errorf("%s=%s: Setup = %v, %v; want the error %q", vars[0], vars[1], on, err, want)
		}
	}
}

// TestSetupOn: an exporter installs an SDK tracer provider, and shutdown
// stops it.
func TestSetupOn(t *testing.T) {
	for _, vars := range []map[string]string{
		{"OTEL_TRACES_EXPORTER": "console"},
		{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
		{"OTEL_TRACES_EXPORTER": "none,otlp"},
	} {
		on, shutdown, err := Setup(context.Background(), env(vars))
		if err != nil || !on {
			t.Fatalf("%v: Setup = %v, %v; want on", vars, on, err)
		}
		if _, ok := otel.GetTracerProvider().(*sdktrace.TracerProvider); !ok {
			t.Errorf("%v: the global tracer provider is %T", vars, otel.GetTracerProvider())
		}
		if err := shutdown(context.Background()); err != nil {
			t.Error(err)
		}
	}
}
