// Package tracing builds an OpenTelemetry tracer provider from the
// standard OTEL_* environment variables, for the process that runs a
// worker (warren's own binary and the examples use it):
//
//	tp, shutdown, err := tracing.FromEnv(ctx, "orders-worker")
//	if err != nil {
//		log.Fatal(err) // names the bad OTEL_* variable
//	}
//	defer shutdown(context.Background()) // flushes the spans still queued
//	cfg.TracerProvider = tp             // nil when tracing is off
//
// Tracing is on when OTEL_TRACES_EXPORTER is "otlp", or when it is unset
// and an OTLP endpoint is named (OTEL_EXPORTER_OTLP_ENDPOINT or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT); it is off when OTEL_TRACES_EXPORTER
// is "none", when OTEL_SDK_DISABLED is "true", and when nothing is set.
// The exporter speaks OTLP over HTTP (OTEL_EXPORTER_OTLP_PROTOCOL
// "http/protobuf", the default) or gRPC ("grpc"); the exporters read
// their endpoint, headers, timeout, compression and TLS settings from the
// environment themselves, the SDK its sampler (OTEL_TRACES_SAMPLER,
// OTEL_TRACES_SAMPLER_ARG) and batching (OTEL_BSP_*), and the resource
// OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES.
package tracing
