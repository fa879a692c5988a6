package tracing

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// The environment variables FromEnv reads itself.
const (
	EnvSDKDisabled      = "OTEL_SDK_DISABLED"
	EnvTracesExporter   = "OTEL_TRACES_EXPORTER"
	EnvProtocol         = "OTEL_EXPORTER_OTLP_PROTOCOL"
	EnvTracesProtocol   = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
	EnvEndpoint         = "OTEL_EXPORTER_OTLP_ENDPOINT"
	EnvTracesEndpoint   = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
	ProtocolHTTP        = "http/protobuf"
	ProtocolGRPC        = "grpc"
	ExporterOTLP        = "otlp"
	ExporterNone        = "none"
	serviceNameAttrName = "service.name"
)

// Shutdown flushes the spans still queued and stops the exporter.
type Shutdown func(ctx context.Context) error

// FromEnv returns a tracer provider configured by the OTEL_* environment
// (see the package comment) and its shutdown, or a nil provider and a
// no-op shutdown when tracing is off. service is the service name unless
// OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES name one. An invalid value
// is an error that names its variable.
func FromEnv(ctx context.Context, service string) (trace.TracerProvider, Shutdown, error) {
	none := func(context.Context) error { return nil }
	on, err := enabled()
	if err != nil || !on {
		return nil, none, err
	}
	exp, err := exporter(ctx)
	if err != nil {
		return nil, none, err
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(attribute.String(serviceNameAttrName, service)),
		resource.WithFromEnv(), resource.WithTelemetrySDK())
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		_ = exp.Shutdown(ctx)
		return nil, none, fmt.Errorf("OTEL_RESOURCE_ATTRIBUTES: %w", err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	return tp, tp.Shutdown, nil
}

// enabled reports whether the environment asks for traces.
func enabled() (bool, error) {
	if strings.EqualFold(strings.TrimSpace(os.Getenv(EnvSDKDisabled)), "true") {
		return false, nil
	}
	switch v := strings.TrimSpace(os.Getenv(EnvTracesExporter)); v {
	case "":
		return os.Getenv(EnvEndpoint) != "" || os.Getenv(EnvTracesEndpoint) != "", nil
	case ExporterNone:
		return false, nil
	case ExporterOTLP:
		return true, nil
	default:
		return false, fmt.Errorf("%s: %q is not supported; use %q or %q", EnvTracesExporter, v, ExporterOTLP, ExporterNone)
	}
}

// exporter is the OTLP span exporter the protocol variables ask for.
func exporter(ctx context.Context) (sdktrace.SpanExporter, error) {
	name, proto := EnvTracesProtocol, os.Getenv(EnvTracesProtocol)
	if proto == "" {
		name, proto = EnvProtocol, os.Getenv(EnvProtocol)
	}
	switch strings.TrimSpace(proto) {
	case "", ProtocolHTTP:
		exp, err := otlptracehttp.New(ctx)
		if err != nil {
			return nil, fmt.Errorf("OTLP/HTTP trace exporter: %w", err)
		}
		return exp, nil
	case ProtocolGRPC:
		exp, err := otlptracegrpc.New(ctx)
		if err != nil {
			return nil, fmt.Errorf("OTLP/gRPC trace exporter: %w", err)
		}
		return exp, nil
	}
	return nil, fmt.Errorf("%s: %q is not supported; use %q or %q", name, proto, ProtocolHTTP, ProtocolGRPC)
}
