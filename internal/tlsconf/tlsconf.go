// Package tlsconf builds TLS client configurations from files named in
// the environment: a CA bundle and an optional client certificate.
package tlsconf

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// Files names the PEM files of a TLS client configuration.
type Files struct {
	CAFile   string // extra roots to trust; "" means the system roots
	CertFile string // client certificate, with KeyFile
	KeyFile  string
}

// Empty reports whether no file is named.
func (f Files) Empty() bool { return f.CAFile == "" && f.CertFile == "" && f.KeyFile == "" }

// Load builds a configuration, TLS 1.2 or later. It returns nil when no
// file is named. Errors name the file and say what is wrong with it.
func (f Files) Load() (*tls.Config, error) {
	if f.Empty() {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if f.CAFile != "" {
		pem, err := os.ReadFile(f.CAFile)
		if err != nil {
			return nil, fmt.Errorf("reading CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA file %s: no PEM certificate in it", f.CAFile)
		}
		cfg.RootCAs = pool
	}
	if (f.CertFile == "") != (f.KeyFile == "") {
		return nil, errors.New("a client certificate needs both a cert file and a key file")
	}
	if f.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("loading client certificate %s: %w", f.CertFile, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}
