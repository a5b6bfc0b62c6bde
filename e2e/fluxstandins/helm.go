package fluxstandins

import (
	"context"
	"encoding/base64"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/opencsp/installer/manifests"
	"github.com/opencsp/installer/stages/flux/kube"
)

var (
	helmRepositoryGVK = schema.GroupVersionKind{Group: "source.toolkit.fluxcd.io", Version: "v1", Kind: "HelmRepository"}
	helmReleaseGVK    = schema.GroupVersionKind{Group: "helm.toolkit.fluxcd.io", Version: "v2", Kind: "HelmRelease"}
)

// CRD is a permissive CRD the stand-in installs for a chart (any spec/status is accepted).
type CRD struct {
	Group, Version, Kind, Plural string
	Cluster                      bool
}

// ChartCRDs are the CRDs each chart brings (by chart name), as permissive schemas: the real
// charts are not available offline. Listed in e2e/README.md.
var ChartCRDs = map[string][]CRD{
	"cert-manager": {
		{"cert-manager.io", "v1", "Certificate", "certificates", false},
		{"cert-manager.io", "v1", "CertificateRequest", "certificaterequests", false},
		{"cert-manager.io", "v1", "Issuer", "issuers", false},
		{"cert-manager.io", "v1", "ClusterIssuer", "clusterissuers", true},
	},
	"cloudnative-pg": {
		{"postgresql.cnpg.io", "v1", "Cluster", "clusters", false},
		{"postgresql.cnpg.io", "v1", "Database", "databases", false},
	},
	"tetragon": {
		{"cilium.io", "v1alpha1", "TracingPolicy", "tracingpolicies", true},
		{"cilium.io", "v1alpha1", "TracingPolicyNamespaced", "tracingpoliciesnamespaced", false},
	},
	"tofu-controller": {
		{"infra.contrib.fluxcd.io", "v1alpha2", "Terraform", "terraforms", false},
	},
}

// K3sCRDs are CRDs K3s itself ships (bundled Traefik); the K3s stand-in does not serve them, so
// tests install them with InstallCRDs.
var K3sCRDs = []CRD{
	{"traefik.io", "v1alpha1", "IngressRouteTCP", "ingressroutetcps", false},
	{"traefik.io", "v1alpha1", "IngressRoute", "ingressroutes", false},
	{"traefik.io", "v1alpha1", "Middleware", "middlewares", false},
}

// CRDObject renders a permissive CRD.
func CRDObject(c CRD) *unstructured.Unstructured {
	scope := "Namespaced"
	if c.Cluster {
		scope = "Cluster"
	}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
		"metadata": map[string]any{"name": c.Plural + "." + c.Group,
			"labels": map[string]any{"opencsp.io/test-standin": "helm-controller"}},
		"spec": map[string]any{
			"group": c.Group, "scope": scope,
			"names": map[string]any{"kind": c.Kind, "plural": c.Plural, "singular": strings.ToLower(c.Kind),
				"listKind": c.Kind + "List"},
			"versions": []any{map[string]any{
				"name": c.Version, "served": true, "storage": true,
				"subresources": map[string]any{"status": map[string]any{}},
				"schema": map[string]any{"openAPIV3Schema": map[string]any{
					"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
			}},
		},
	}}
}

// InstallCRDs applies permissive CRDs and waits until they are established.
func InstallCRDs(ctx context.Context, c *kube.Client, crds []CRD) error {
	var objs []*unstructured.Unstructured
	for _, crd := range crds {
		objs = append(objs, CRDObject(crd))
	}
	_, err := c.Apply(ctx, objs, kube.ApplyOptions{FieldManager: "standin-helm-controller", Force: true})
	return err
}

// HelmController is the helm-controller stand-in.
type HelmController struct {
	Client *kube.Client
	Log    *slog.Logger
	// Charts are the pinned charts (default manifests.Charts()).
	Charts []manifests.Chart
	// Index lists, by chart name, the versions the fake chart repositories hold on top of the
	// pinned one, like a real repository index that also has older and newer releases: a
	// HelmRelease pinning one of them (a components.<name>.version override) installs; any
	// other version is "not found", as with a real repository.
	Index map[string][]string
}

// Available returns the versions of chart the stand-in's fake repository index holds: the
// pinned versions (Charts) and those listed in Index.
func (h *HelmController) Available(chart string) []string {
	charts := h.Charts
	if charts == nil {
		charts = manifests.Charts()
	}
	var out []string
	for _, c := range charts {
		if c.Chart == chart && !slices.Contains(out, c.Version) {
			out = append(out, c.Version)
		}
	}
	for _, v := range h.Index[chart] {
		if !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	return out
}

// Run reconciles until ctx ends.
func (h *HelmController) Run(ctx context.Context) {
	if h.Log == nil {
		h.Log = slog.Default()
	}
	loop(ctx, h.Log, "helm-controller", h.Once)
}

// Once marks HelmRepositories Ready and reconciles every HelmRelease once.
func (h *HelmController) Once(ctx context.Context) error {
	repos, err := h.list(ctx, helmRepositoryGVK)
	if err != nil {
		return err
	}
	for i := range repos {
		r := &repos[i]
		url, _, _ := unstructured.NestedString(r.Object, "spec", "url")
		if err := setReady(ctx, h.Client, r, "True", "Succeeded",
			"stand-in: not fetched (offline); "+url, nil); err != nil {
			return err
		}
	}
	rels, err := h.list(ctx, helmReleaseGVK)
	if err != nil {
		return err
	}
	for i := range rels {
		hr := &rels[i]
		status, reason, msg, version := h.check(ctx, hr)
		extra := map[string]any{}
		if status == "True" {
			extra["lastAttemptedRevision"] = version
		}
		if err := setReady(ctx, h.Client, hr, status, reason, msg, extra); err != nil {
			return err
		}
	}
	return nil
}

func (h *HelmController) list(ctx context.Context, gvk schema.GroupVersionKind) ([]unstructured.Unstructured, error) {
	ri, err := h.Client.Resource(gvk, "")
	if err != nil {
		return nil, err
	}
	l, err := ri.List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", gvk.Kind, err)
	}
	return l.Items, nil
}

// check validates one HelmRelease the way a chart install would fail offline-detectably.
func (h *HelmController) check(ctx context.Context, hr *unstructured.Unstructured) (status, reason, msg, version string) {
	spec, _, _ := unstructured.NestedMap(hr.Object, "spec", "chart", "spec")
	chart, _ := spec["chart"].(string)
	version, _ = spec["version"].(string)
	ref, _ := spec["sourceRef"].(map[string]any)
	refKind, _ := ref["kind"].(string)
	refName, _ := ref["name"].(string)
	refNS, _ := ref["namespace"].(string)
	if refNS == "" {
		refNS = hr.GetNamespace()
	}
	if refKind != "HelmRepository" {
		return "False", "ArtifactFailed", fmt.Sprintf("stand-in supports HelmRepository sources only, got %q", refKind), version
	}
	repo, err := h.Client.Get(ctx, helmRepositoryGVK, refNS, refName)
	if err != nil || repo == nil {
		// Transient (applied in the same batch, or later): not a failure yet.
		return "Unknown", "Progressing", fmt.Sprintf("waiting for HelmRepository %s/%s", refNS, refName), version
	}
	known := h.Available(chart)
	if !slices.Contains(known, version) {
		return "False", "ArtifactFailed", fmt.Sprintf("chart %s version %q not found in HelmRepository %s/%s (stand-in index: versions %v)",
			chart, version, refNS, refName, known), version
	}
	vf, _, _ := unstructured.NestedSlice(hr.Object, "spec", "valuesFrom")
	for _, item := range vf {
		m, _ := item.(map[string]any)
		kind, _ := m["kind"].(string)
		name, _ := m["name"].(string)
		key, _ := m["valuesKey"].(string)
		optional, _ := m["optional"].(bool)
		targetPath, _ := m["targetPath"].(string)
		if key == "" {
			key = "values.yaml"
		}
		if err := h.checkValuesFrom(ctx, hr.GetNamespace(), kind, name, key, targetPath); err != nil && !optional {
			return "False", "InstallFailed", err.Error(), version
		}
	}
	if crds := ChartCRDs[chart]; len(crds) > 0 {
		if err := InstallCRDs(ctx, h.Client, crds); err != nil {
			return "False", "InstallFailed", "install chart CRDs: " + err.Error(), version
		}
	}
	return "True", "InstallSucceeded", fmt.Sprintf("stand-in: release %s-%s marked installed (no workloads rendered)", chart, version), version
}

// checkValuesFrom resolves one valuesFrom reference as helm-controller does:
// with a targetPath the value is taken literally (Helm's literal --set
// parsing), so only a whole values document (no targetPath) must parse as
// YAML. Generated passwords with YAML-special characters are fine.
func (h *HelmController) checkValuesFrom(ctx context.Context, ns, kind, name, key, targetPath string) error {
	gvk := schema.GroupVersionKind{Version: "v1", Kind: kind}
	u, err := h.Client.Get(ctx, gvk, ns, name)
	if err != nil {
		return err
	}
	if u == nil {
		return fmt.Errorf("could not resolve %s reference '%s/%s'", kind, ns, name)
	}
	var raw string
	if kind == "Secret" {
		b64, ok, _ := unstructured.NestedString(u.Object, "data", key)
		if !ok {
			return fmt.Errorf("missing key '%s' in %s '%s/%s'", key, kind, ns, name)
		}
		dec, err := decodeB64(b64)
		if err != nil {
			return err
		}
		raw = dec
	} else {
		s, ok, _ := unstructured.NestedString(u.Object, "data", key)
		if !ok {
			return fmt.Errorf("missing key '%s' in %s '%s/%s'", key, kind, ns, name)
		}
		raw = s
	}
	if targetPath != "" {
		return nil
	}
	var v any
	if err := yaml.Unmarshal([]byte(raw), &v); err != nil {
		return fmt.Errorf("unable to read values from key '%s' in %s '%s/%s': %v", key, kind, ns, name, err)
	}
	return nil
}

func decodeB64(s string) (string, error) {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return "", fmt.Errorf("decode secret value: %w", err)
	}
	return string(b), nil
}
