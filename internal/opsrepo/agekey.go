package opsrepo

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/opencsp/installer/clusters"
	"github.com/opencsp/installer/internal/config"
	"github.com/opencsp/installer/internal/opsrepo/sopsage"
	"github.com/opencsp/installer/manifests"
)

// AgeKey is the install's age key: SOPS files are encrypted to its
// recipient, kustomize-controller decrypts them with it.
type AgeKey = sopsage.Key

// AgeKeyFileName is the key's file in the state dir when the config does not
// name one.
const AgeKeyFileName = "age.key"

// AgeSecretKey is the key of the age identity in Secret flux-system/sops-age.
const AgeSecretKey = "age.agekey"

// AgeKeyPath is where the install's age key lives: config
// secrets.ageKeyFile (relative to the config file) or <stateDir>/age.key.
func AgeKeyPath(cfg *config.Config, stateDir string) string {
	if f := cfg.Secrets.AgeKeyFile; f != "" {
		return cfg.ResolvePath(f)
	}
	return filepath.Join(stateDir, AgeKeyFileName)
}

// LoadOrCreateAgeKey reads the age key at path, or generates one there
// (mode 0600, parent directories 0700) when the file does not exist;
// created reports the latter. A file that exists but is not a valid age
// key is an error, never replaced.
func LoadOrCreateAgeKey(path string) (key *AgeKey, created bool, err error) {
	data, err := os.ReadFile(path)
	if err == nil {
		k, err := sopsage.ParseKey(data)
		if err != nil {
			return nil, false, fmt.Errorf("age key %s: %w", path, err)
		}
		return k, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, false, fmt.Errorf("read age key: %w", err)
	}
	k, err := sopsage.GenerateKey()
	if err != nil {
		return nil, false, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, false, fmt.Errorf("create age key directory: %w", err)
	}
	// O_EXCL: a key written concurrently by another run wins and is read.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return LoadOrCreateAgeKey(path)
	}
	if err != nil {
		return nil, false, fmt.Errorf("create age key: %w", err)
	}
	_, werr := f.Write(k.File(time.Now()))
	if err := errors.Join(werr, f.Sync(), f.Close()); err != nil {
		_ = os.Remove(path)
		return nil, false, fmt.Errorf("write age key %s: %w", path, err)
	}
	return k, true, nil
}

// AgeSecretManifest is the Secret flux-system/sops-age (key age.agekey)
// that kustomize-controller decrypts the ops repo's SOPS files with. It
// holds the private key: the flux stage applies it to the cluster; it is
// never written to the ops repo.
func AgeSecretManifest(key *AgeKey) []byte {
	return fmt.Appendf(nil, `apiVersion: v1
kind: Secret
metadata:
  name: %s
  namespace: %s
  labels:
    app.kubernetes.io/part-of: opencsp
type: Opaque
data:
  %s: %s
`, clusters.SOPSSecretName, manifests.SecretsNamespace, AgeSecretKey,
		base64.StdEncoding.EncodeToString([]byte(key.Secret()+"\n")))
}
