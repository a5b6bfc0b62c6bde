package manifests

import (
	"slices"
)

// SecretsNamespace is where every generated Secret lives: Flux reads them
// there for postBuild substitution and HelmRelease valuesFrom.
const SecretsNamespace = "flux-system"

// KeyKind says how the installer generates a secret value. Every kind yields
// a single line of characters that are safe inside a double-quoted YAML
// string and a JSON string (no quotes, backslashes, `$` or whitespace).
type KeyKind string

const (
	// KindPassword: 32 random characters from [A-Za-z0-9].
	KindPassword KeyKind = "password"
	// KindStrongPassword: 24 random characters from [A-Za-z0-9] plus at
	// least one upper, one lower, one digit and one symbol from "-_.!#%+"
	// (meets the default Zitadel password policy).
	KindStrongPassword KeyKind = "strong-password"
	// KindMasterkey32: exactly 32 random characters from [A-Za-z0-9]
	// (Zitadel masterkey).
	KindMasterkey32 KeyKind = "masterkey32"
	// KindHex32: 32 random bytes, lower-case hex (64 characters).
	KindHex32 KeyKind = "hex32"
	// KindHex64: 64 random bytes, lower-case hex (128 characters).
	KindHex64 KeyKind = "hex64"
	// KindBase64_32: 32 random bytes, standard base64 with padding
	// (44 characters).
	KindBase64_32 KeyKind = "base64-32"
	// KindS3AccessKey: 20 random characters from [A-Z0-9] (S3 access key id).
	KindS3AccessKey KeyKind = "s3-access-key"
	// KindS3SecretKey: 40 random characters from [A-Za-z0-9].
	KindS3SecretKey KeyKind = "s3-secret-key"
	// KindRSA2048PEMBase64: a new RSA 2048 private key, PKCS#1 PEM, then
	// standard base64 of the whole PEM text (one line; Lago wants it so).
	KindRSA2048PEMBase64 KeyKind = "rsa2048-pem-base64"
)

// KeySpec is one key of a generated Secret. Name is also the variable name
// that manifests use as ${Name}.
type KeySpec struct {
	Name        string
	Kind        KeyKind
	Description string
}

// SecretSpec is a Secret the installer generates once per installation
// (never regenerated while it exists), SOPS-encrypts into the ops repo and
// that Flux applies to Namespace/Name before the layers run.
type SecretSpec struct {
	Namespace string
	Name      string
	Keys      []KeySpec
}

var secretTable = []SecretSpec{
	{Name: "postgres-credentials", Keys: []KeySpec{
		{"ZITADEL_DB_PASSWORD", KindPassword, "PostgreSQL role zitadel (CNPG managed role, Zitadel)."},
		{"LAGO_DB_PASSWORD", KindPassword, "PostgreSQL role lago."},
		{"SEMAPHORE_DB_PASSWORD", KindPassword, "PostgreSQL role semaphore."},
		{"CONSOLE_DB_PASSWORD", KindPassword, "PostgreSQL role console."},
	}},
	{Name: "valkey-credentials", Keys: []KeySpec{
		{"VALKEY_PASSWORD", KindPassword, "Password of the Valkey default user (Lago)."},
	}},
	{Name: "s3-credentials", Keys: []KeySpec{
		{"S3_ADMIN_ACCESS_KEY", KindS3AccessKey, "SeaweedFS S3 identity admin (all buckets, operators only)."},
		{"S3_ADMIN_SECRET_KEY", KindS3SecretKey, "Secret of S3_ADMIN_ACCESS_KEY."},
		{"S3_OBSERVABILITY_ACCESS_KEY", KindS3AccessKey, "S3 identity of Loki, Tempo and Mimir (telemetry buckets, monitoring-logs)."},
		{"S3_OBSERVABILITY_SECRET_KEY", KindS3SecretKey, "Secret of S3_OBSERVABILITY_ACCESS_KEY."},
		{"S3_LAGO_ACCESS_KEY", KindS3AccessKey, "S3 identity of Lago (bucket lago)."},
		{"S3_LAGO_SECRET_KEY", KindS3SecretKey, "Secret of S3_LAGO_ACCESS_KEY."},
		{"S3_TOFU_ACCESS_KEY", KindS3AccessKey, "S3 identity of tofu-controller runners (bucket terraform-state)."},
		{"S3_TOFU_SECRET_KEY", KindS3SecretKey, "Secret of S3_TOFU_ACCESS_KEY."},
		{"S3_CONSOLE_ACCESS_KEY", KindS3AccessKey, "S3 identity of the Console backend (creates user buckets at run time)."},
		{"S3_CONSOLE_SECRET_KEY", KindS3SecretKey, "Secret of S3_CONSOLE_ACCESS_KEY."},
	}},
	{Name: "zitadel-secrets", Keys: []KeySpec{
		{"ZITADEL_MASTERKEY", KindMasterkey32, "Zitadel masterkey (symmetric encryption of its data); never rotate."},
		{"ZITADEL_ADMIN_PASSWORD", KindStrongPassword, "Initial password of the Zitadel human admin (change required at first login)."},
	}},
	{Name: "grafana-secrets", Keys: []KeySpec{
		{"GRAFANA_ADMIN_PASSWORD", KindPassword, "Password of the Grafana local admin."},
	}},
	{Name: "lago-secrets", Keys: []KeySpec{
		{"LAGO_SECRET_KEY_BASE", KindHex64, "Rails SECRET_KEY_BASE of Lago."},
		{"LAGO_ENCRYPTION_PRIMARY_KEY", KindPassword, "Rails Active Record encryption primary key."},
		{"LAGO_ENCRYPTION_DETERMINISTIC_KEY", KindPassword, "Rails Active Record encryption deterministic key."},
		{"LAGO_ENCRYPTION_KEY_DERIVATION_SALT", KindPassword, "Rails Active Record encryption key derivation salt."},
		{"LAGO_RSA_PRIVATE_KEY", KindRSA2048PEMBase64, "Lago RSA key (signs webhooks)."},
		{"LAGO_ORG_API_KEY", KindHex32, "API key of the Lago organization created at first start; the Console uses it."},
		{"LAGO_ADMIN_PASSWORD", KindStrongPassword, "Password of the Lago organization's first user."},
	}},
	{Name: "semaphore-secrets", Keys: []KeySpec{
		{"SEMAPHORE_ADMIN_PASSWORD", KindPassword, "Password of the Semaphore local admin."},
		{"SEMAPHORE_COOKIE_HASH", KindBase64_32, "Semaphore cookie hash key."},
		{"SEMAPHORE_COOKIE_ENCRYPTION", KindBase64_32, "Semaphore cookie encryption key."},
		{"SEMAPHORE_ACCESS_KEY_ENCRYPTION", KindBase64_32, "Semaphore access-key (stored credentials) encryption key."},
	}},
	{Name: "console-secrets", Keys: []KeySpec{
		{"CONSOLE_SESSION_KEY", KindHex32, "Key that signs and encrypts Console session cookies."},
	}},
}

// Secrets returns every Secret the installer must generate, in flux-system.
// All of them are generated whatever components are enabled (unused ones
// are harmless, and enabling a component later needs no new secret).
func Secrets() []SecretSpec {
	out := make([]SecretSpec, 0, len(secretTable))
	for _, s := range secretTable {
		s.Namespace = SecretsNamespace
		s.Keys = slices.Clone(s.Keys)
		out = append(out, s)
	}
	return out
}

// SecretsFor returns the Secrets the given layers read, in Secrets() order.
func SecretsFor(layers []Layer) []SecretSpec {
	want := map[string]bool{}
	for _, l := range layers {
		for _, s := range l.Secrets {
			want[s] = true
		}
	}
	var out []SecretSpec
	for _, s := range Secrets() {
		if want[s.Name] {
			out = append(out, s)
		}
	}
	return out
}

// SecretKeyNames returns every generated key (= secret variable) name.
func SecretKeyNames() []string {
	var out []string
	for _, s := range secretTable {
		for _, k := range s.Keys {
			out = append(out, k.Name)
		}
	}
	return out
}
