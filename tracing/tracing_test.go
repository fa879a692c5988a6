package tracing_test

import (
	"context"
	"strings"
	"testing"

	"github.com/warrenmq/warren/tracing"
)

// clearEnv unsets every variable FromEnv looks at, for the test.
func clearEnv(t *testing.T) {
	for _, k := range []string{tracing.EnvSDKDisabled, tracing.EnvTracesExporter, tracing.EnvProtocol,
		tracing.EnvTracesProtocol, tracing.EnvEndpoint, tracing.EnvTracesEndpoint} {
		t.Setenv(k, "")
	}
}

func TestFromEnvOnOff(t *testing.T) {
	cases := []struct {
		name string
		env  []string
		on   bool
		err  string
	}{
		{"nothing set", nil, false, ""},
		{"endpoint named", []string{tracing.EnvEndpoint, "http://127.0.0.1:4318"}, true, ""},
		{"traces endpoint named", []string{tracing.EnvTracesEndpoint, "http://127.0.0.1:4318/v1/traces"}, true, ""},
		{"otlp", []string{tracing.EnvTracesExporter, "otlp"}, true, ""},
		{"grpc", []string{tracing.EnvTracesExporter, "otlp", tracing.EnvProtocol, "grpc"}, true, ""},
		{"none", []string{tracing.EnvTracesExporter, "none", tracing.EnvEndpoint, "http://x:4318"}, false, ""},
		{"sdk disabled", []string{tracing.EnvSDKDisabled, "true", tracing.EnvTracesExporter, "otlp"}, false, ""},
		{"unknown exporter", []string{tracing.EnvTracesExporter, "zipkin"}, false, "OTEL_TRACES_EXPORTER"},
		{"unknown protocol", []string{tracing.EnvTracesExporter, "otlp", tracing.EnvTracesProtocol, "http/json"}, false, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			clearEnv(t)
			for i := 0; i+1 < len(c.env); i += 2 {
				t.Setenv(c.env[i], c.env[i+1])
			}
			tp, shutdown, err := tracing.FromEnv(context.Background(), "svc")
			if c.err != "" {
				if err == nil || !strings.HasPrefix(err.Error(), c.err+":") {
					t.Fatalf("error %v, want one naming %s", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				if err := shutdown(context.Background()); err != nil {
					t.Errorf("shutdown: %v", err)
				}
			}()
			if got := tp != nil; got != c.on {
				t.Errorf("tracing on = %v, want %v", got, c.on)
			}
		})
	}
}
