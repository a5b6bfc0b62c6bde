package opsrepo

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path"

	"go.yaml.in/yaml/v3"

	"github.com/opencsp/installer/clusters"
	"github.com/opencsp/installer/internal/opsrepo/secretgen"
	"github.com/opencsp/installer/internal/opsrepo/sopsage"
	"github.com/opencsp/installer/manifests"
)

// ErrSecretUnreadable means an encrypted Secret in the repo cannot be read
// with the install's age key. opencsp then refuses to render: generating
// new values would rotate live credentials (the Zitadel masterkey cannot
// be rotated at all).
var ErrSecretUnreadable = errors.New("existing secret cannot be read")

// renderSecrets returns the SOPS files of manifests.Secrets() (repo paths)
// and their plaintext values.
func renderSecrets(ctx context.Context, in RenderInput, cpath string, log *slog.Logger) (map[string][]byte, map[string]map[string]string, error) {
	files := map[string][]byte{}
	all := map[string]map[string]string{}
	for _, spec := range manifests.Secrets() {
		if err := ctx.Err(); err != nil {
			return nil, nil, err
		}
		rel := path.Join(cpath, clusters.SecretFile(spec.Name))
		enc, err := readExisting(in.Existing, rel)
		if err != nil {
			return nil, nil, err
		}
		var (
			oldPlain []byte
			oldMeta  sopsage.Metadata
			old      map[string]string
		)
		if enc != nil {
			oldPlain, oldMeta, err = sopsage.Decrypt(enc, in.AgeKey)
			if err == nil {
				old, err = secretValues(oldPlain)
			}
			if err != nil {
				return nil, nil, fmt.Errorf("%w: %s with the age key %s (secrets.ageKeyFile of this installation?): %v",
					ErrSecretUnreadable, rel, in.AgeKey.Recipient(), err)
			}
		}
		values := map[string]string{}
		var generated, reused []string
		for _, k := range spec.Keys {
			v, ok := old[k.Name]
			if ok && !secretgen.Valid(v) {
				return nil, nil, fmt.Errorf("%w: %s: key %s holds an empty or unsafe value (quote, $, backslash or newline)", ErrSecretUnreadable, rel, k.Name)
			}
			if !ok {
				v, ok = in.previous[spec.Name][k.Name]
			}
			if ok {
				reused = append(reused, k.Name)
			} else {
				if v, err = secretgen.Generate(k.Kind, nil); err != nil {
					return nil, nil, fmt.Errorf("generate %s/%s: %w", spec.Name, k.Name, err)
				}
				generated = append(generated, k.Name)
			}
			in.Redactor.Add(v)
			values[k.Name] = v
		}
		all[spec.Name] = values
		plain, err := secretManifest(spec, values)
		if err != nil {
			return nil, nil, err
		}
		if enc != nil && oldMeta.Matches(in.AgeKey.Recipient()) {
			norm, err := sopsage.Normalize(plain)
			if err != nil {
				return nil, nil, fmt.Errorf("secret %s: %w", spec.Name, err)
			}
			if bytes.Equal(norm, oldPlain) {
				files[rel] = enc
				continue
			}
		}
		if files[rel], err = sopsage.Encrypt(plain, in.AgeKey.Recipient(), in.Now()); err != nil {
			return nil, nil, fmt.Errorf("encrypt secret %s: %w", spec.Name, err)
		}
		reason := "new"
		if enc != nil {
			reason = "changed"
		}
		log.Info("encrypted secret", "secret", spec.Name, "reason", reason, "generated", generated, "kept", reused)
	}
	return files, all, nil
}

func readExisting(fsys fs.FS, p string) ([]byte, error) {
	if fsys == nil {
		return nil, nil
	}
	data, err := fs.ReadFile(fsys, p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read existing %s: %w", p, err)
	}
	return data, nil
}

// secretManifest is the plaintext Secret (values in stringData, in key
// order) that gets encrypted.
func secretManifest(spec manifests.SecretSpec, values map[string]string) ([]byte, error) {
	data := &yaml.Node{Kind: yaml.MappingNode}
	for _, k := range spec.Keys {
		data.Content = append(data.Content,
			&yaml.Node{Kind: yaml.ScalarNode, Value: k.Name},
			&yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: values[k.Name]})
	}
	doc := struct {
		APIVersion string `yaml:"apiVersion"`
		Kind       string `yaml:"kind"`
		Metadata   struct {
			Name      string            `yaml:"name"`
			Namespace string            `yaml:"namespace"`
			Labels    map[string]string `yaml:"labels"`
		} `yaml:"metadata"`
		Type       string     `yaml:"type"`
		StringData *yaml.Node `yaml:"stringData"`
	}{APIVersion: "v1", Kind: "Secret", Type: "Opaque", StringData: data}
	doc.Metadata.Name = spec.Name
	doc.Metadata.Namespace = spec.Namespace
	doc.Metadata.Labels = map[string]string{"app.kubernetes.io/part-of": "opencsp"}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return nil, fmt.Errorf("secret %s: %w", spec.Name, err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("secret %s: %w", spec.Name, err)
	}
	return buf.Bytes(), nil
}

// secretValues reads a decrypted Secret: stringData, and data (base64)
// for keys stringData lacks.
func secretValues(plain []byte) (map[string]string, error) {
	var s struct {
		Kind       string            `yaml:"kind"`
		StringData map[string]string `yaml:"stringData"`
		Data       map[string]string `yaml:"data"`
	}
	if err := yaml.Unmarshal(plain, &s); err != nil {
		return nil, fmt.Errorf("parse decrypted Secret: %w", err)
	}
	if s.Kind != "Secret" {
		return nil, fmt.Errorf("decrypted document is a %q, not a Secret", s.Kind)
	}
	out := map[string]string{}
	for k, v := range s.Data {
		b, err := base64.StdEncoding.DecodeString(v)
		if err != nil {
			return nil, fmt.Errorf("data.%s is not base64", k)
		}
		out[k] = string(b)
	}
	for k, v := range s.StringData {
		out[k] = v
	}
	return out, nil
}
