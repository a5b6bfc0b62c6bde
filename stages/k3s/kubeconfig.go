package k3s

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// kubeconfig is the part of K3s's k3s.yaml the installer uses: one cluster
// and one user with an embedded client certificate.
type kubeconfig struct {
	raw    map[string]any
	server string
	caPEM  []byte
	cert   tls.Certificate
}

func parseKubeconfig(data []byte) (*kubeconfig, error) {
	var raw map[string]any
	if err := yaml.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("parse kubeconfig: %w", err)
	}
	var doc struct {
		Clusters []struct {
			Cluster struct {
				Server string `yaml:"server"`
				CA     string `yaml:"certificate-authority-data"`
			} `yaml:"cluster"`
		} `yaml:"clusters"`
		Users []struct {
			User struct {
				Cert string `yaml:"client-certificate-data"`
				Key  string `yaml:"client-key-data"`
			} `yaml:"user"`
		} `yaml:"users"`
	}
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("parse kubeconfig: %w", err)
	}
	if len(doc.Clusters) != 1 || len(doc.Users) != 1 {
		return nil, fmt.Errorf("kubeconfig: want one cluster and one user, got %d and %d", len(doc.Clusters), len(doc.Users))
	}
	kc := &kubeconfig{raw: raw, server: doc.Clusters[0].Cluster.Server}
	var err error
	if kc.caPEM, err = base64.StdEncoding.DecodeString(doc.Clusters[0].Cluster.CA); err != nil {
		return nil, fmt.Errorf("kubeconfig certificate-authority-data: %w", err)
	}
	certPEM, err := base64.StdEncoding.DecodeString(doc.Users[0].User.Cert)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig client-certificate-data: %w", err)
	}
	keyPEM, err := base64.StdEncoding.DecodeString(doc.Users[0].User.Key)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig client-key-data: %w", err)
	}
	if kc.cert, err = tls.X509KeyPair(certPEM, keyPEM); err != nil {
		return nil, fmt.Errorf("kubeconfig client certificate: %w", err)
	}
	return kc, nil
}

// withServer returns the kubeconfig with its cluster's server replaced (K3s
// writes https://127.0.0.1:6443, which means nothing off the VM).
func (kc *kubeconfig) withServer(server string) ([]byte, error) {
	clusters, _ := kc.raw["clusters"].([]any)
	for _, c := range clusters {
		if m, ok := c.(map[string]any); ok {
			if cl, ok := m["cluster"].(map[string]any); ok {
				cl["server"] = server
			}
		}
	}
	kc.server = server
	out, err := yaml.Marshal(kc.raw)
	if err != nil {
		return nil, fmt.Errorf("render kubeconfig: %w", err)
	}
	return out, nil
}

// client talks to the API server as the kubeconfig's user, trusting only
// the kubeconfig's CA.
func (kc *kubeconfig) client() (*http.Client, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(kc.caPEM) {
		return nil, errors.New("kubeconfig: no CA certificate")
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{kc.cert}, MinVersion: tls.VersionTLS12},
	}}, nil
}

// get fetches path and returns the body of a 200 answer.
func get(ctx context.Context, c *http.Client, server, path string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(server, "/")+path, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s: %s", path, resp.Status, strings.TrimSpace(string(body)))
	}
	return body, nil
}

// readyz asks the API server whether it is ready.
func readyz(ctx context.Context, c *http.Client, server string) error {
	_, err := get(ctx, c, server, "/readyz")
	return err
}

// nodeReady reports whether the Node exists and its Ready condition is True.
func nodeReady(ctx context.Context, c *http.Client, server, name string) error {
	body, err := get(ctx, c, server, "/api/v1/nodes/"+name)
	if err != nil {
		return fmt.Errorf("node %s: %w", name, err)
	}
	var node struct {
		Status struct {
			Conditions []struct {
				Type, Status, Reason, Message string
			} `json:"conditions"`
		} `json:"status"`
	}
	if err := json.Unmarshal(body, &node); err != nil {
		return fmt.Errorf("node %s: %w", name, err)
	}
	for _, c := range node.Status.Conditions {
		if c.Type == "Ready" {
			if c.Status == "True" {
				return nil
			}
			return fmt.Errorf("node %s not ready: %s %s", name, c.Reason, c.Message)
		}
	}
	return fmt.Errorf("node %s has no Ready condition yet", name)
}

// writePrivate writes data to path with mode 0600, atomically.
func writePrivate(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".kubeconfig-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
