package worker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
)

// servers are the health and metrics HTTP servers of one Run.
type servers struct {
	log  *zap.Logger
	srvs []*http.Server
	wg   sync.WaitGroup
}

// startServers listens on the configured addresses. Listening happens
// here, so a taken port fails start-up; serving runs until stop.
func (w *Worker) startServers(reg *prometheus.Registry) (*servers, error) {
	s := &servers{log: w.log.Named("http")}
	if w.cfg.HealthAddr != "" {
		mux := http.NewServeMux()
		mux.HandleFunc("/livez", func(rw http.ResponseWriter, _ *http.Request) { fmt.Fprintln(rw, "ok") })
		mux.HandleFunc("/readyz", func(rw http.ResponseWriter, _ *http.Request) {
			if !w.Ready() {
				http.Error(rw, "not ready", http.StatusServiceUnavailable)
				return
			}
			fmt.Fprintln(rw, "ready")
		})
		if err := s.serve("health", w.cfg.HealthAddr, mux); err != nil {
			s.stop()
			return nil, fmt.Errorf("%s_HEALTH_ADDR: %w", EnvPrefix, err)
		}
	}
	if w.cfg.MetricsAddr != "" {
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		if err := s.serve("metrics", w.cfg.MetricsAddr, mux); err != nil {
			s.stop()
			return nil, fmt.Errorf("%s_METRICS_ADDR: %w", EnvPrefix, err)
		}
	}
	return s, nil
}

func (s *servers) serve(name, addr string, h http.Handler) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	s.srvs = append(s.srvs, srv)
	s.log.Info("serving", zap.String("server", name), zap.String("addr", ln.Addr().String()))
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("server stopped", zap.String("server", name), zap.Error(err))
		}
	}()
	return nil
}

func (s *servers) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, srv := range s.srvs {
		_ = srv.Shutdown(ctx)
	}
	s.wg.Wait()
}
