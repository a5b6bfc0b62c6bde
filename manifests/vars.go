package manifests

import (
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strings"
)

// ClusterVarsName is the flux-system ConfigMap that holds the cluster values
// for postBuild substitution (see Vars).
const ClusterVarsName = "cluster-vars"

// Var is one cluster value substituted into the manifests as ${NAME} by
// Flux postBuild substitution from the cluster-vars ConfigMap.
type Var struct {
	Name        string
	Description string
	// Default is used when the installer gives no value; "" with Required
	// means the installer must give one.
	Default  string
	Required bool
	// Derived values are computed from other variables by ResolveVars and
	// cannot be set directly.
	Derived bool
	// Example is a sample value for documentation and tests.
	Example string
}

// Secret variables are not listed here: they are the keys of the Secrets in
// Secrets() and reach the manifests through the same substitution.
var varTable = []Var{
	{Name: "CLUSTER_NAME", Required: true, Example: "lab",
		Description: "Cluster name (config cluster.name), a DNS label."},
	{Name: "CLUSTER_DOMAIN", Required: true, Example: "lab.example.net",
		Description: "Base DNS domain (config cluster.domain); services appear as <service>.<domain>."},
	{Name: "CLUSTER_DOMAIN_REGEX", Derived: true, Example: `lab\.example\.net`,
		Description: "CLUSTER_DOMAIN quoted for a regular expression (Traefik HostSNIRegexp, CoreDNS rewrite)."},
	{Name: "MANAGEMENT_ADDRESS", Required: true, Example: "192.0.2.10",
		Description: "IP address of the management VM (K3s node); the Console shows it for SSH and DNS setup."},
	{Name: "STORAGE_CLASS", Default: "local-path", Example: "local-path",
		Description: "StorageClass of every PersistentVolumeClaim (K3s local-path provisioner)."},
	{Name: "INGRESS_CLASS", Default: "traefik", Example: "traefik",
		Description: "IngressClass of every Ingress (K3s Traefik)."},
	{Name: "CLUSTER_ISSUER", Default: "opencsp-ca", Example: "opencsp-ca",
		Description: "cert-manager ClusterIssuer for every certificate: opencsp-ca (self-signed CA, works offline) or letsencrypt (ACME HTTP-01)."},
	{Name: "ACME_EMAIL", Default: "", Example: "ops@example.net",
		Description: "Contact e-mail of the letsencrypt ACME account (only used when CLUSTER_ISSUER=letsencrypt)."},
	{Name: "ACME_SERVER", Default: "https://acme-v02.api.letsencrypt.org/directory", Example: "https://acme-v02.api.letsencrypt.org/directory",
		Description: "ACME directory URL of the letsencrypt ClusterIssuer."},
	{Name: "K3S_VERSION", Required: true, Example: "v1.33.5+k3s1",
		Description: "K3s release the k3s-server upgrade Plan converges to (config k3s.version)."},
	{Name: "S3_ENDPOINT", Default: "http://seaweedfs-all-in-one.storage.svc.cluster.local:8333", Example: "http://seaweedfs-all-in-one.storage.svc.cluster.local:8333",
		Description: "In-cluster S3 endpoint URL (SeaweedFS all-in-one S3 gateway)."},
	{Name: "S3_HOST", Derived: true, Example: "seaweedfs-all-in-one.storage.svc.cluster.local:8333",
		Description: "host:port of S3_ENDPOINT, for clients that want no scheme (Tempo, Mimir)."},
	{Name: "S3_INSECURE", Derived: true, Example: "true",
		Description: `"true" when S3_ENDPOINT is plain http, else "false".`},
	{Name: "S3_REGION", Default: "us-east-1", Example: "us-east-1",
		Description: "S3 region name presented to clients (SeaweedFS ignores it)."},
	{Name: "CONSOLE_FRONTEND_IMAGE", Default: "ghcr.io/opencsp/console-frontend:v0.1.0", Example: "ghcr.io/opencsp/console-frontend:v0.1.0",
		Description: "Image of the OpenCSP Console frontend Deployment."},
	{Name: "CONSOLE_BACKEND_IMAGE", Default: "ghcr.io/opencsp/console-backend:v0.1.0", Example: "ghcr.io/opencsp/console-backend:v0.1.0",
		Description: "Image of the OpenCSP Console backend Deployment."},
}

// Vars returns the cluster variables in a stable order.
func Vars() []Var { return slices.Clone(varTable) }

// VarNames returns the names of Vars().
func VarNames() []string {
	var out []string
	for _, v := range varTable {
		out = append(out, v.Name)
	}
	return out
}

var varNameRE = regexp.MustCompile(`^[A-Z][A-Z0-9_]*$`)

// ResolveVars validates the installer's values, applies defaults and
// computes the derived variables. It returns every variable of Vars().
// Unknown names, derived names, missing required values and malformed
// values are errors (all of them, sorted).
func ResolveVars(values map[string]string) (map[string]string, error) {
	var errs []string
	known := map[string]Var{}
	for _, v := range varTable {
		known[v.Name] = v
	}
	for k := range values {
		v, ok := known[k]
		switch {
		case !ok:
			errs = append(errs, fmt.Sprintf("unknown cluster variable %s", k))
		case v.Derived:
			errs = append(errs, fmt.Sprintf("cluster variable %s is derived and cannot be set", k))
		}
	}
	out := map[string]string{}
	for _, v := range varTable {
		if v.Derived {
			continue
		}
		val, ok := values[v.Name]
		if !ok || val == "" {
			val = v.Default
		}
		if v.Required && val == "" {
			errs = append(errs, fmt.Sprintf("cluster variable %s is required", v.Name))
		}
		if strings.ContainsAny(val, "\n\r\"'`$") {
			errs = append(errs, fmt.Sprintf("cluster variable %s contains a character that is unsafe in manifests", v.Name))
		}
		out[v.Name] = val
	}
	out["CLUSTER_DOMAIN_REGEX"] = regexp.QuoteMeta(out["CLUSTER_DOMAIN"])
	if u, err := url.Parse(out["S3_ENDPOINT"]); err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		errs = append(errs, fmt.Sprintf("cluster variable S3_ENDPOINT %q is not an http(s) URL", out["S3_ENDPOINT"]))
	} else {
		host := u.Host
		if u.Port() == "" {
			host += map[string]string{"http": ":80", "https": ":443"}[u.Scheme]
		}
		out["S3_HOST"] = host
		out["S3_INSECURE"] = fmt.Sprint(u.Scheme == "http")
	}
	if len(errs) > 0 {
		sort.Strings(errs)
		return nil, fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return out, nil
}

// ExampleVars returns the Example of every non-derived variable, for tests
// and documentation.
func ExampleVars() map[string]string {
	out := map[string]string{}
	for _, v := range varTable {
		if !v.Derived {
			out[v.Name] = v.Example
		}
	}
	return out
}

func init() {
	for _, v := range varTable {
		if !varNameRE.MatchString(v.Name) {
			panic("manifests: bad variable name " + v.Name)
		}
	}
}
