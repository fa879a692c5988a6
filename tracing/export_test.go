package tracing_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/warrenmq/warren/tracing"
)

// received is what a receiver got: span names by service name.
type received struct {
	mu    sync.Mutex
	spans map[string][]string
}

func (r *received) add(req *coltracepb.ExportTraceServiceRequest) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.spans == nil {
		r.spans = map[string][]string{}
	}
	for _, rs := range req.ResourceSpans {
		service := ""
		for _, kv := range rs.GetResource().GetAttributes() {
			if kv.Key == "service.name" {
				service = kv.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				r.spans[service] = append(r.spans[service], s.Name)
			}
		}
	}
}

func (r *received) of(service string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.spans[service]
}

// grpcReceiver is an OTLP/gRPC trace service.
type grpcReceiver struct {
	coltracepb.UnimplementedTraceServiceServer
	got *received
}

func (g grpcReceiver) Export(_ context.Context, req *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	g.got.add(req)
	return &coltracepb.ExportTraceServiceResponse{}, nil
}

// exportOne builds a provider from the environment, makes one span and
// shuts the provider down, which flushes it.
func exportOne(t *testing.T) {
	t.Helper()
	tp, shutdown, err := tracing.FromEnv(context.Background(), "default-name")
	if err != nil {
		t.Fatal(err)
	}
	if tp == nil {
		t.Fatal("tracing is off")
	}
	_, span := tp.Tracer("test").Start(context.Background(), "one span")
	span.End()
	if err := shutdown(context.Background()); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
}

// Over OTLP/HTTP (the default protocol) and OTLP/gRPC, configured only by
// OTEL_* variables, a span reaches the receiver under the service name
// OTEL_SERVICE_NAME gives.
func TestFromEnvExports(t *testing.T) {
	t.Run("http", func(t *testing.T) {
		got := &received{}
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			var req coltracepb.ExportTraceServiceRequest
			if r.URL.Path != "/v1/traces" || proto.Unmarshal(body, &req) != nil {
				http.Error(w, "bad export", http.StatusBadRequest)
				return
			}
			got.add(&req)
			w.Header().Set("Content-Type", "application/x-protobuf")
			out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
			_, _ = w.Write(out)
		}))
		defer srv.Close()
		clearEnv(t)
		t.Setenv(tracing.EnvEndpoint, srv.URL)
		t.Setenv("OTEL_SERVICE_NAME", "svc-http")
		exportOne(t)
		if names := got.of("svc-http"); len(names) != 1 || names[0] != "one span" {
			t.Errorf("received %v, want [one span] from svc-http", got.spans)
		}
	})
	t.Run("grpc", func(t *testing.T) {
		got := &received{}
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		s := grpc.NewServer()
		coltracepb.RegisterTraceServiceServer(s, grpcReceiver{got: got})
		done := make(chan struct{})
		go func() { defer close(done); _ = s.Serve(lis) }()
		defer func() { s.Stop(); <-done }()
		clearEnv(t)
		t.Setenv(tracing.EnvTracesExporter, "otlp")
		t.Setenv(tracing.EnvProtocol, "grpc")
		t.Setenv(tracing.EnvEndpoint, "http://"+lis.Addr().String())
		t.Setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
		t.Setenv("OTEL_SERVICE_NAME", "svc-grpc")
		exportOne(t)
		if names := got.of("svc-grpc"); len(names) != 1 || names[0] != "one span" {
			t.Errorf("received %v, want [one span] from svc-grpc", got.spans)
		}
	})
}
