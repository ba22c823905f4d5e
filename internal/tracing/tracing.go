// Package tracing sets up OpenTelemetry tracing from the standard OTEL_*
// environment variables. Tracing is off unless OTEL_TRACES_EXPORTER names an
// exporter: then Setup installs a global tracer provider and the W3C trace
// context propagator, and the server installs its instrumentation (gRPC,
// HTTP, Redis). Off, nothing is installed, so that tracing costs nothing.
//
// The variables read here are OTEL_SDK_DISABLED, OTEL_TRACES_EXPORTER
// ("otlp", "console" or "none", comma-separated) and, for otlp,
// OTEL_EXPORTER_OTLP_TRACES_PROTOCOL or OTEL_EXPORTER_OTLP_PROTOCOL ("grpc"
// or "http/protobuf", the default). The SDK and the exporters read the rest
// themselves: OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES, the sampler
// (OTEL_TRACES_SAMPLER, OTEL_TRACES_SAMPLER_ARG), the batching (OTEL_BSP_*)
// and the OTLP endpoint, headers, TLS and timeout (OTEL_EXPORTER_OTLP_*).
package tracing

import (
	"context"
	"fmt"
	"os"
	"strings"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// ServiceName is the service.name of the spans unless OTEL_SERVICE_NAME or
// OTEL_RESOURCE_ATTRIBUTES says otherwise.
const ServiceName = "orderexpiry"

// Setup reads the environment through getenv and, when it names an
// exporter, installs a global tracer provider that batches spans to it and
// the W3C trace context and baggage propagators. It returns whether tracing
// is on, and a shutdown that flushes the spans not exported yet; shutdown
// does nothing when tracing is off. An exporter or protocol it does not
// know is an error that names the variable.
func Setup(ctx context.Context, getenv func(string) string) (on bool, shutdown func(context.Context) error, err error) {
	nothing := func(context.Context) error { return nil }
	if strings.EqualFold(strings.TrimSpace(getenv("OTEL_SDK_DISABLED")), "true") {
		return false, nothing, nil
	}
	var opts []sdktrace.TracerProviderOption
	for name := range strings.SplitSeq(getenv("OTEL_TRACES_EXPORTER"), ",") {
		exp, err := exporter(ctx, strings.TrimSpace(name), getenv)
		if err != nil {
			return false, nothing, err
		}
		if exp != nil {
			opts = append(opts, sdktrace.WithBatcher(exp))
		}
	}
	if len(opts) == 0 {
		return false, nothing, nil
	}
	// Later options win: the environment over the default name.
	res, err := resource.New(ctx,
		resource.WithAttributes(attribute.String("service.name", ServiceName)),
		resource.WithTelemetrySDK(),
		resource.WithFromEnv())
	if err != nil {
		return false, nothing, fmt.Errorf("OTEL_RESOURCE_ATTRIBUTES: %w", err)
	}
	tp := sdktrace.NewTracerProvider(append(opts, sdktrace.WithResource(res))...)
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	return true, tp.Shutdown, nil
}

// exporter returns the exporter called name in OTEL_TRACES_EXPORTER, or nil
// for "none" and "".
func exporter(ctx context.Context, name string, getenv func(string) string) (sdktrace.SpanExporter, error) {
	switch name {
	case "", "none":
		return nil, nil
	case "console":
		return stdouttrace.New(stdouttrace.WithWriter(os.Stdout))
	case "otlp":
		protocol, variable := getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"), "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
		if protocol == "" {
			protocol, variable = getenv("OTEL_EXPORTER_OTLP_PROTOCOL"), "OTEL_EXPORTER_OTLP_PROTOCOL"
		}
		switch protocol {
		case "", "http/protobuf":
			return otlptracehttp.New(ctx)
		case "grpc":
			return otlptracegrpc.New(ctx)
		default:
			return nil, fmt.Errorf("%s is %q: use grpc or http/protobuf", variable, protocol)
		}
	default:
		return nil, fmt.Errorf("OTEL_TRACES_EXPORTER names %q: use otlp, console or none", name)
	}
}
