package manifests

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/opencsp/installer/manifests/kbuild"
	"go.yaml.in/yaml/v3"
)

// fakeSecretValue is a value of the kind's alphabet and length class.
func fakeSecretValue(k KeyKind) string {
	switch k {
	case KindStrongPassword:
		return "Aa1-Bb2_Cc3.Dd4!Ee5#Ff6%"
	case KindMasterkey32:
		return strings.Repeat("aB3", 10) + "xy"
	case KindHex32:
		return strings.Repeat("0f", 32)
	case KindHex64:
		return strings.Repeat("0f", 64)
	case KindBase64_32:
		return strings.Repeat("A+/b", 10) + "AAA="
	case KindS3AccessKey:
		return "AKIA0123456789ABCDEF"
	case KindRSA2048PEMBase64:
		return "LS0tLS1CRUdJTiBSU0EgUFJJVkFURSBLRVktLS0tLQo+/="
	default:
		return "Passw0rdPassw0rdPassw0rdPassw0rd"
	}
}

// substitute emulates Flux postBuild substitution for ${VAR}.
func substitute(text string, values map[string]string) string {
	return varRefRE.ReplaceAllStringFunc(text, func(m string) string {
		if v, ok := values[m[2:len(m)-1]]; ok {
			return v
		}
		return m
	})
}

// TestSubstitutedManifestsParse substitutes example cluster values and
// secret values of every kind into every layer, as Flux would, and checks
// that the result is still valid: YAML documents, embedded YAML and JSON
// configuration, booleans where the charts expect them.
func TestSubstitutedManifestsParse(t *testing.T) {
	values, err := ResolveVars(ExampleVars())
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range Secrets() {
		for _, k := range s.Keys {
			values[k.Name] = fakeSecretValue(k.Kind)
		}
	}
	for name, objs := range built(t) {
		for _, o := range objs {
			text := string(o.YAML)
			if !substitutionDisabled(o) {
				text = substitute(text, values)
			}
			if strings.Contains(text, "${") {
				t.Errorf("%s: %s keeps an unsubstituted variable", name, o.ID())
			}
			var m map[string]any
			if err := yaml.Unmarshal([]byte(text), &m); err != nil {
				t.Errorf("%s: %s is not valid YAML after substitution: %v", name, o.ID(), err)
				continue
			}
			for _, field := range []string{"data", "stringData"} {
				data, _ := m[field].(map[string]any)
				for k, v := range data {
					s, _ := v.(string)
					switch {
					case strings.HasSuffix(k, ".yaml"):
						var x any
						if err := yaml.Unmarshal([]byte(s), &x); err != nil {
							t.Errorf("%s: %s %s.%s: embedded YAML: %v", name, o.ID(), field, k, err)
						}
					case strings.HasSuffix(k, ".json"), k == "seaweedfs_s3_config":
						if !json.Valid([]byte(s)) {
							t.Errorf("%s: %s %s.%s: embedded JSON is invalid", name, o.ID(), field, k)
						}
					}
				}
			}
			// Chart booleans substituted from S3_INSECURE stay booleans.
			for _, p := range [][]string{
				{"spec", "values", "loki", "storage", "s3", "insecure"},
				{"spec", "values", "tempo", "storage", "trace", "s3", "insecure"},
				{"spec", "values", "mimir", "structuredConfig", "common", "storage", "s3", "insecure"},
			} {
				if v := kbuild.Get(m, p...); v != nil {
					if _, ok := v.(bool); !ok {
						t.Errorf("%s: %s %s = %v is not a boolean", name, o.ID(), strings.Join(p, "."), v)
					}
				}
			}
		}
	}
	// The Teleport route and the CoreDNS rewrite match the quoted domain.
	for _, o := range built(t)["teleport"] {
		if o.Kind() == "IngressRouteTCP" {
			text := substitute(string(o.YAML), values)
			if !strings.Contains(text, "HostSNI(`teleport.lab.example.net`)") || !strings.Contains(text, `\.teleport\.lab\.example\.net$`) {
				t.Errorf("teleport route after substitution:\n%s", text)
			}
		}
	}
}
